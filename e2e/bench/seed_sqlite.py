#!/usr/bin/env python3
"""Loads `loadgen seed-sql` output (PostgreSQL COPY blocks for MLflow's tables) into MLflow's
SQLite database, for e2e/bench/run.sh with BENCH_BACKEND=sqlite.

    loadgen seed-sql --experiment-id ID --runs N | python3 seed_sqlite.py PATH.db

The same rows as on PostgreSQL, one transaction. COPY's text format as loadgen writes it: tab
separated, `\\N` for NULL, no escaped characters in the values; the one boolean column, `is_nan`,
`t`/`f` becomes 1/0 (how SQLAlchemy stores MLflow's Boolean columns in SQLite). Standard library
only.
"""

from __future__ import annotations

import re
import sqlite3
import sys

COPY = re.compile(r"COPY (\w+) \(([^)]*)\) FROM stdin;")


def value(column, field):
    if field == "\\N":
        return None
    if column == "is_nan":
        return {"t": 1, "f": 0}[field]
    return field


def main():
    db = sqlite3.connect(sys.argv[1], timeout=60)
    table, columns, rows, loaded = None, None, [], {}
    for line in sys.stdin:
        line = line.rstrip("\n")
        if table is None:
            m = COPY.match(line)
            if m:
                table, columns, rows = m.group(1), [c.strip() for c in m.group(2).split(",")], []
            continue
        if line == "\\.":
            db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                           rows)
            loaded[table] = len(rows)
            table = None
            continue
        rows.append([value(c, f) for c, f in zip(columns, line.split("\t"))])
    db.commit()
    db.close()
    print(" ".join(f"{t}={n}" for t, n in loaded.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
