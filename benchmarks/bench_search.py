"""1:N search latency and recall of the pgvector HNSW index against an exact scan.

Builds a synthetic gallery in its own table (by default the storage and index
parameters of gallery.Face: halfvec(128), HNSW m=16, ef_construction=128,
cosine), then times the query the search API runs (owner filter, ORDER BY
cosine distance, LIMIT k, iterative scan) at several hnsw.ef_search values and
compares the ids with an exact NumPy scan. EXPLAIN shows which index each
owner's query uses.

Synthetic data: 128-d unit vectors clustered around "people" (--per-person
faces each; within-person cosine ~0.6, like SFace faces of one person), spread
over --owners owners with Zipf-like sizes (owner 1 holds the most; each
person belongs to one owner), so the owner filter is exercised on a large and
on small owners. Queries are new noisy samples of random people of the
queried owner.

Reports copy and index build time, table and index size, recall@1/@k and
p50/p95 per ef_search (largest owner) and per owner at the default
ef_search, insert throughput with the index present (single-row and
multi-row inserts), and, for --storage halfvec, how far half precision moves
the similarities and whether any decision at the matching threshold flips.

    .venv/bin/python -m benchmarks.bench_search --faces 1000000   # dev stack database (DATABASE_URL)

A large table takes long to build (1M rows: ~20-30 min on 2 busy cores), so
``--keep`` leaves it (with its build figures) in the database and ``--reuse``
times the queries again on it without rebuilding. The vectors are regenerated
from --seed, so the exact answers match the kept table; --reuse refuses a
table built with other parameters.

    FACEINDEX_VAR_DIR=var/bench-search FACEINDEX_PORT_BASE=23100 .venv/bin/python -m deploy.stack start
    FACEINDEX_VAR_DIR=var/bench-search FACEINDEX_PORT_BASE=23100 .venv/bin/python -m benchmarks.bench_search --faces 1000000 --keep
    FACEINDEX_VAR_DIR=var/bench-search FACEINDEX_PORT_BASE=23100 .venv/bin/python -m benchmarks.bench_search --faces 1000000 --reuse
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from pgvector import HalfVector

DIM = 128
TABLE = "bench_search_faces"
# One row: the parameters and build figures of the kept TABLE (--keep / --reuse).
META_TABLE = "bench_search_build"


def clustered_vectors(n: int, people: int, rng: np.random.Generator, noise: float = 0.075):
    """(vectors, person centres, person of each vector)."""
    centres = rng.standard_normal((people, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, people, n)
    vectors = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # in chunks: bounded temporary memory at 1M+ rows
        chunk = centres[labels[start:start + 100_000]]
        chunk = chunk + noise * rng.standard_normal(chunk.shape).astype(np.float32)
        vectors[start:start + 100_000] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return vectors, centres, labels


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


OPCLASS = {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}


def build(conn, vectors: np.ndarray, owners: np.ndarray, storage: str, maintenance_work_mem: str,
          m: int = 16, ef_construction: int = 128) -> dict:
    conn.execute(f"DROP TABLE IF EXISTS {META_TABLE}")
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, owner_id int NOT NULL, embedding {storage}({DIM}) NOT NULL)")
    started = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(f"COPY {TABLE} (id, owner_id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int4", storage])
        for i, (owner, vector) in enumerate(zip(owners, vectors)):
            copy.write_row((i, int(owner), vector if storage == "vector" else HalfVector(vector)))
    copied = time.perf_counter() - started
    conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
    # pgvector says when the graph outgrew maintenance_work_mem (the build then slows down a lot).
    notices: list[str] = []

    def hnsw_notice(diag):
        if "hnsw" in (diag.message_primary or ""):
            notices.append(diag.message_primary)
    conn.add_notice_handler(hnsw_notice)
    started = time.perf_counter()
    conn.execute(f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (embedding {OPCLASS[storage]}) "
                 f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")
    indexed = time.perf_counter() - started
    conn.remove_notice_handler(hnsw_notice)
    workers = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]
    conn.execute(f"CREATE INDEX ON {TABLE} (owner_id)")
    conn.execute(f"ANALYZE {TABLE}")
    size_of = lambda rel: conn.execute("SELECT pg_total_relation_size(%s)", (rel,)).fetchone()[0]  # noqa: E731
    table_bytes = conn.execute("SELECT pg_relation_size(%s)", (TABLE,)).fetchone()[0]
    return {"copy_s": round(copied, 1), "index_build_s": round(indexed, 1), "maintenance_work_mem": maintenance_work_mem,
            "max_parallel_maintenance_workers": int(workers), "build_notices": notices,
            "load_average_after_build": [round(v, 2) for v in os.getloadavg()],
            "m": m, "ef_construction": ef_construction,
            "table_mb": round(table_bytes / 2**20, 1), "hnsw_index_mb": round(size_of(f"{TABLE}_hnsw") / 2**20, 1)}


def kept_build(conn, params: dict) -> dict:
    """Build figures of the kept table, if it was built with exactly these parameters."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                          (META_TABLE, TABLE)).fetchone()[0]
    if not exists:
        raise SystemExit(f"--reuse: no kept table {TABLE} in this database; run once with --keep")
    kept_params, figures = conn.execute(f"SELECT params, build FROM {META_TABLE}").fetchone()
    if kept_params != params:
        raise SystemExit(f"--reuse: the kept table was built with {kept_params}, not {params}")
    return figures


def keep_build(conn, params: dict, figures: dict) -> None:
    conn.execute(f"CREATE TABLE {META_TABLE} (params jsonb NOT NULL, build jsonb NOT NULL)")
    conn.execute(f"INSERT INTO {META_TABLE} VALUES (%s::jsonb, %s::jsonb)", (json.dumps(params), json.dumps(figures)))


def graph_memory(conn, storage: str, m: int, ef_construction: int, rows: int = 24_000, budget_mb: int = 16) -> dict:
    """Memory the HNSW build needs per face: build over ``rows`` kept faces with a small maintenance_work_mem
    and read the tuple count at which pgvector says the graph no longer fits (~17k faces: the rest of the
    build, on disk, is short)."""
    import psycopg

    notices: list[str] = []

    def hnsw_notice(diag):
        notices.append(diag.message_primary or "")
    conn.add_notice_handler(hnsw_notice)
    conn.execute("DROP TABLE IF EXISTS bench_search_graph")
    conn.execute(f"CREATE TABLE bench_search_graph AS SELECT * FROM {TABLE} WHERE id < %s", (rows,))
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL maintenance_work_mem = '{int(budget_mb)}MB'")
            conn.execute("SET LOCAL statement_timeout = '300s'")
            conn.execute(f"CREATE INDEX ON bench_search_graph USING hnsw (embedding {OPCLASS[storage]}) "
                         f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")
    except psycopg.errors.QueryCanceled:
        pass
    finally:
        conn.remove_notice_handler(hnsw_notice)
        conn.execute("DROP TABLE bench_search_graph")
    fitted = [int(word) for n in notices if "no longer fits" in n for word in n.split() if word.isdigit()]
    if not fitted:
        return {"rows": rows, "maintenance_work_mem_mb": budget_mb, "note": "the graph fitted; use more rows"}
    return {"rows": rows, "maintenance_work_mem_mb": budget_mb, "graph_full_after_tuples": fitted[0],
            "build_bytes_per_face": round(budget_mb * 2**20 / fitted[0])}


def index_used(conn, sql: str, probe, ef: int) -> str:
    """The index the planner picks for an owner's query (EXPLAIN), e.g. the HNSW index or the owner_id btree."""
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, {"q": probe}).fetchall())
    for name in (f"{TABLE}_hnsw", f"{TABLE}_owner_id_idx"):
        if name in plan:
            return name
    return "none (sequential scan)"


def owner_shares(owners: int) -> np.ndarray:
    """Zipf-like shares of owners 1..owners: owner i holds 1/i of owner 1's rows."""
    weights = 1.0 / np.arange(1, owners + 1)
    return weights / weights.sum()


def _time_queries(conn, sql: str, probes, exact, exact_first, k: int, ef: int, cast: str):
    latencies, recall, first = [], [], []
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        for p in probes[:5]:  # warm the cache
            conn.execute(sql, {"q": cast(p)}).fetchall()
        for p, truth, top in zip(probes, exact, exact_first):
            started = time.perf_counter()
            ids = [row[0] for row in conn.execute(sql, {"q": cast(p)}).fetchall()]
            latencies.append(time.perf_counter() - started)
            recall.append(len(truth & set(ids)) / k)
            first.append(top in ids[:1])
    return {f"recall@{k}": round(float(np.mean(recall)), 4), "recall@1": round(float(np.mean(first)), 4),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2)}


def run(size: int, queries: int, k: int, ef_values: list[int], per_person: int = 20, seed: int = 0,
        storage: str = "halfvec", owners: int = 5, maintenance_work_mem: str = "2GB", inserts: int = 2000,
        default_ef: int = 100, threshold: float = 0.375, m: int = 16, ef_construction: int = 128,
        keep: bool = False, reuse: bool = False, measure_graph_memory: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    vectors, centres, person = clustered_vectors(size, max(size // per_person, 1), rng)
    # Each person's photos belong to one owner (an owner's archive holds its own people).
    owner_of_person = rng.choice(np.arange(1, owners + 1), size=len(centres), p=owner_shares(owners)).astype(np.int32)
    labels = owner_of_person[person]
    cast = (lambda v: v) if storage == "vector" else HalfVector

    conn = connect()
    params = {"size": size, "storage": storage, "faces_per_person": per_person, "owners": owners, "seed": seed,
              "m": m, "ef_construction": ef_construction}
    if reuse:
        figures = {**kept_build(conn, params), "reused": True}
    else:
        figures = build(conn, vectors, labels, storage, maintenance_work_mem, m, ef_construction)
        if keep:
            keep_build(conn, params, figures)
    report = {"size": size, "storage": storage, "faces_per_person": per_person, "owners": owners, "dim": DIM, "k": k,
              "queries": queries, "seed": seed, **figures,
              "shared_buffers": conn.execute("SHOW shared_buffers").fetchone()[0],
              "load_average_before_queries": [round(v, 2) for v in os.getloadavg()]}
    # relaxed_order may return the k rows slightly out of order: re-sort them (pgvector's documented pattern).
    sql = (f"WITH nearest AS MATERIALIZED (SELECT id, embedding <=> %(q)s AS distance FROM {TABLE} WHERE owner_id = %s "
           f"ORDER BY embedding <=> %(q)s LIMIT {k}) SELECT id FROM nearest ORDER BY distance")
    report["ef_search"], report["per_owner"] = [], []
    for owner in range(1, owners + 1):
        mine = np.flatnonzero(labels == owner)
        people = np.flatnonzero(owner_of_person == owner)
        probes = centres[rng.choice(people, queries)] + 0.075 * rng.standard_normal((queries, DIM)).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        # Exact answer: brute force in float32 over this owner's rows.
        scores = probes @ vectors[mine].T
        exact = [set(mine[np.argsort(-row)[:k]].tolist()) for row in scores]
        exact_first = [mine[int(np.argmax(row))] for row in scores]
        owner_sql = sql.replace("owner_id = %s", f"owner_id = {owner}")
        if owner == 1:
            for ef in ef_values:
                report["ef_search"].append({"ef_search": ef, "owner_rows": int(len(mine)),
                                            **_time_queries(conn, owner_sql, probes, exact, exact_first, k, ef, cast)})
            if storage == "halfvec":
                report["halfvec_accuracy"] = _halfvec_accuracy(probes, vectors[mine], threshold)
        report["per_owner"].append({"owner": owner, "owner_rows": int(len(mine)), "ef_search": default_ef,
                                    "index_used": index_used(conn, owner_sql, cast(probes[0]), default_ef),
                                    **_time_queries(conn, owner_sql, probes, exact, exact_first, k, default_ef, cast)})
        del scores
    report["load_average_after_queries"] = [round(v, 2) for v in os.getloadavg()]
    if measure_graph_memory:
        report["graph_memory"] = graph_memory(conn, storage, m, ef_construction)
    if inserts:
        report["inserts"] = _insert_throughput(conn, rng, centres, size, inserts, storage)
    if keep or reuse:
        # Back to exactly the kept rows, so the next --reuse compares with the same exact answers.
        conn.execute(f"DELETE FROM {TABLE} WHERE id >= %s", (size,))
    else:
        conn.execute(f"DROP TABLE {TABLE}")
    return report


def _halfvec_accuracy(probes: np.ndarray, owner_vectors: np.ndarray, threshold: float) -> dict:
    """How far half precision moves probe-to-face cosine similarities, and pair decisions flipped at the threshold."""
    def cosine(a, b):
        a = a.astype(np.float16).astype(np.float32)
        b = b.astype(np.float16).astype(np.float32)
        return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T

    worst, flipped, near = 0.0, 0, 0
    for start in range(0, len(probes), 20):
        full = probes[start:start + 20] @ owner_vectors.T
        half = cosine(probes[start:start + 20], owner_vectors)
        worst = max(worst, float(np.abs(full - half).max()))
        flipped += int(np.sum((full >= threshold) != (half >= threshold)))
        near += int(np.sum(np.abs(full - threshold) < 0.01))
    return {"pairs": int(len(probes) * len(owner_vectors)), "max_abs_similarity_change": round(worst, 5),
            "threshold": threshold, "pair_decisions_flipped": flipped, "pairs_within_0.01_of_threshold": near}


def _insert_throughput(conn, rng, centres, size: int, count: int, storage: str) -> dict:
    """Rows per second added to the indexed table: one INSERT per row, then 100-row multi-row INSERTs."""
    vectors = centres[rng.integers(0, len(centres), count)] + 0.075 * rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cast = (lambda v: v) if storage == "vector" else HalfVector
    half = count // 2
    started = time.perf_counter()
    for i, v in enumerate(vectors[:half]):
        conn.execute(f"INSERT INTO {TABLE} (id, owner_id, embedding) VALUES (%s, 1, %s)", (size + i, cast(v)))
    single = half / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(half, count, 100):
        chunk = vectors[start:start + 100]
        values = ", ".join(["(%s, 1, %s)"] * len(chunk))
        params = [x for j, v in enumerate(chunk) for x in (size + start + j, cast(v))]
        conn.execute(f"INSERT INTO {TABLE} (id, owner_id, embedding) VALUES {values}", params)
    multi = (count - half) / (time.perf_counter() - started)
    return {"rows": count, "single_row_per_s": round(single, 1), "multi_row_100_per_s": round(multi, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", "--size", dest="size", type=int, default=200_000)
    parser.add_argument("--storage", choices=sorted(OPCLASS), default="halfvec", help="gallery.Face uses halfvec")
    parser.add_argument("--owners", type=int, default=5)
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--inserts", type=int, default=2000)
    parser.add_argument("--m", type=int, default=16, help="HNSW m (gallery.Face uses 16)")
    parser.add_argument("--ef-construction", type=int, default=128, help="HNSW ef_construction (gallery.Face uses 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="leave the built table in the database for --reuse")
    parser.add_argument("--reuse", action="store_true",
                        help="time the queries on the table a --keep run left (same parameters), without rebuilding")
    parser.add_argument("--graph-memory", action="store_true",
                        help="also measure the HNSW build memory per face (maintenance_work_mem a large build needs)")
    parser.add_argument("--default-ef", type=int, default=100, help="ef_search for the per-owner figures")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef", default="20,40,100,200")
    parser.add_argument("--per-person", type=int, default=20, help="faces per synthetic person (fewer: harder top-k)")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.queries, args.k, [int(v) for v in args.ef.split(",")], args.per_person,
                         storage=args.storage, owners=args.owners, maintenance_work_mem=args.maintenance_work_mem,
                         inserts=args.inserts, m=args.m, ef_construction=args.ef_construction,
                         default_ef=args.default_ef, seed=args.seed, keep=args.keep, reuse=args.reuse,
                         measure_graph_memory=args.graph_memory), indent=2))


if __name__ == "__main__":
    main()
