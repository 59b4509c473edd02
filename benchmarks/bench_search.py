"""1:N search latency and recall of the pgvector HNSW index against an exact scan.

Builds a synthetic gallery in its own table (same index parameters as
gallery.Face: HNSW m=16, ef_construction=64, cosine), then times the query the
search API runs (owner filter, ORDER BY cosine distance, LIMIT k, iterative
scan) at several hnsw.ef_search values and compares the ids with an exact
NumPy scan.

Synthetic data: 128-d unit vectors clustered around "people" (--per-person
faces each; within-person cosine ~0.6, like SFace faces of one person), 10%
of rows of a second owner so the owner filter is exercised. Queries are new
noisy samples of random people.

    .venv/bin/python -m benchmarks.bench_search --size 200000   # dev stack database (DATABASE_URL)
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

DIM = 128
TABLE = "bench_search_faces"


def clustered_vectors(n: int, people: int, rng: np.random.Generator, noise: float = 0.075) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((people, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, people, n)
    vectors = centres[labels] + noise * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), centres


def connect():
    import django

    from deploy.stack import Stack

    # Settings read only the environment: the running dev stack's connection
    # variables (`python -m deploy.stack start` in `make bench`), unless set.
    for name, value in Stack.from_env().env().items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings_dev")
    django.setup()
    import psycopg
    from django.conf import settings
    from pgvector.psycopg import register_vector

    db = settings.DATABASES["default"]
    conn = psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"],
                           autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    return conn


def build(conn, vectors: np.ndarray, owners: np.ndarray) -> dict:
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, owner_id int NOT NULL, embedding vector({DIM}) NOT NULL)")
    started = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(f"COPY {TABLE} (id, owner_id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int4", "vector"])
        for i, (owner, vector) in enumerate(zip(owners, vectors)):
            copy.write_row((i, int(owner), vector))
    copied = time.perf_counter() - started
    conn.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    conn.execute(f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
    indexed = time.perf_counter() - started
    conn.execute(f"ANALYZE {TABLE}")
    return {"copy_s": round(copied, 1), "index_build_s": round(indexed, 1)}


def run(size: int, queries: int, k: int, ef_values: list[int], per_person: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vectors, centres = clustered_vectors(size, max(size // per_person, 1), rng)
    owners = np.where(rng.random(size) < 0.9, 1, 2).astype(np.int32)
    probes = centres[rng.integers(0, len(centres), queries)] + 0.075 * rng.standard_normal((queries, DIM)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    # Exact answer: brute force over owner 1's rows.
    mine = np.flatnonzero(owners == 1)
    exact = [set(mine[np.argsort(-(vectors[mine] @ p))[:k]].tolist()) for p in probes]
    exact_first = [mine[int(np.argmax(vectors[mine] @ p))] for p in probes]

    conn = connect()
    report = {"size": size, "faces_per_person": per_person, "owner_rows": int(len(mine)), "dim": DIM, "k": k, "queries": queries, **build(conn, vectors, owners)}
    sql = f"SELECT id FROM {TABLE} WHERE owner_id = 1 ORDER BY embedding <=> %s LIMIT {k}"
    report["ef_search"] = []
    for ef in ef_values:
        latencies, recall, first = [], [], []
        with conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            for p in probes[:5]:  # warm the cache
                conn.execute(sql, (p,)).fetchall()
            for p, truth, top in zip(probes, exact, exact_first):
                started = time.perf_counter()
                ids = [row[0] for row in conn.execute(sql, (p,)).fetchall()]
                latencies.append(time.perf_counter() - started)
                recall.append(len(truth & set(ids)) / k)
                first.append(top in ids[:1])
        report["ef_search"].append({
            "ef_search": ef, f"recall@{k}": round(float(np.mean(recall)), 4), "recall@1": round(float(np.mean(first)), 4),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2), "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
        })
    conn.execute(f"DROP TABLE {TABLE}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef", default="20,40,100,200")
    parser.add_argument("--per-person", type=int, default=20, help="faces per synthetic person (fewer: harder top-k)")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.queries, args.k, [int(v) for v in args.ef.split(",")], args.per_person), indent=2))


if __name__ == "__main__":
    main()
