"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from mlflow.exceptions import MlflowException


def now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def mlflow_error(code: str, match: str | None = None):
    """Expect the block to raise MlflowException with this error_code (and message regex)."""
    with pytest.raises(MlflowException, match=match) as info:
        yield info
    assert info.value.error_code == code, (
        f"expected {code}, got {info.value.error_code}: {info.value.message}"
    )


def tags_dict(obj) -> dict:
    """{key: value} of an entity's tags (MLflow entities expose tags as dicts or lists)."""
    tags = obj.tags
    if isinstance(tags, dict):
        return dict(tags)
    return {t.key: t.value for t in tags}


def user_tags(tags: dict) -> dict:
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.")}


def all_pages(fetch, max_results: int):
    """Follow page tokens: fetch(max_results=, page_token=) -> PagedList. Returns the pages."""
    pages = []
    token = None
    while True:
        page = fetch(max_results=max_results, page_token=token)
        pages.append(page)
        token = page.token
        if not token:
            return pages
        assert len(pages) < 1000, "page tokens never end"


def fit_line(offset: float):
    """A tiny sklearn model (y = 2x + offset) and three inputs: models with different offsets
    predict different values, so a test can tell which version it loaded."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(20, dtype=float).reshape(-1, 1)
    return LinearRegression().fit(x, 2 * x.ravel() + offset), x[:3]
