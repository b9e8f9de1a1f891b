"""A minimal S3 client for the tests: list a bucket through the S3 API, signed with SigV4.

The tests check that artifacts a server stored with `--artifacts-destination s3://…` are really
objects in the S3 server (e2e/setup/s3.sh), not somewhere else. boto3 is not in the venv (and
would rebuild it for one call), so ListObjectsV2 is signed here with the standard library.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import requests

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str

    @classmethod
    def from_env(cls) -> "S3Bucket | None":
        """The bucket e2e/setup/s3.sh exported, or None when it has not run."""
        endpoint = os.environ.get("FERROFLOW_E2E_S3_ENDPOINT")
        if not endpoint:
            return None
        return cls(
            endpoint=endpoint.rstrip("/"),
            bucket=os.environ["FERROFLOW_E2E_S3_BUCKET"],
            access_key_id=os.environ["FERROFLOW_E2E_S3_ACCESS_KEY_ID"],
            secret_access_key=os.environ["FERROFLOW_E2E_S3_SECRET_ACCESS_KEY"],
            region=os.environ.get("FERROFLOW_E2E_S3_REGION", "us-east-1"),
        )

    def server_env(self) -> dict[str, str]:
        """Environment for a tracking server whose artifacts destination is in this bucket: the
        one an MLflow server uses (boto3 reads MLFLOW_S3_ENDPOINT_URL), which ferroflow must
        accept unchanged. ENDPOINT and REGION are decoys that object_store would also read as
        S3 settings; a server must ignore them."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "ENDPOINT": "http://127.0.0.1:9",
            "REGION": "nowhere-1",
        }

    def list(self, prefix: str) -> dict[str, int]:
        """{key: size} of every object whose key starts with `prefix` (ListObjectsV2, all pages)."""
        objects: dict[str, int] = {}
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            response = self._request("GET", f"/{self.bucket}", query)
            root = ET.fromstring(response.content)
            for item in root.findall(f"{_NS}Contents"):
                objects[item.findtext(f"{_NS}Key")] = int(item.findtext(f"{_NS}Size"))
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return objects
            token = root.findtext(f"{_NS}NextContinuationToken")

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every object whose key starts with `prefix`; returns how many."""
        keys = list(self.list(prefix))
        for key in keys:
            self._request("DELETE", f"/{self.bucket}/{key}", {}, ok=(204, 200))
        return len(keys)

    def _request(self, method: str, path: str, query: dict[str, str], ok=(200,)) -> requests.Response:
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        host = urlsplit(self.endpoint).netloc
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        headers = {"host": host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([
            method,
            quote(path, safe="/-_.~"),
            canonical_query,
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            _EMPTY_SHA256,
        ])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join([
            "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest(),
        ])
        key = f"AWS4{self.secret_access_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        response = requests.request(
            method,
            f"{self.endpoint}{quote(path, safe='/-_.~')}?{canonical_query}",
            headers={k: v for k, v in headers.items() if k != "host"},
            timeout=30,
        )
        if response.status_code not in ok:
            raise AssertionError(f"S3 {method} {path}?{canonical_query} -> {response.status_code}: {response.text[:500]}")
        return response
