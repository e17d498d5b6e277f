"""Encode throughput of the sentence model (texts a second, uncached), on the shared ticket
texts: the platform's ONNX Runtime path, and, where sentence-transformers with torch is
installed (the runtime before this one: `--baseline`), that pipeline on the same texts in the
same run, alternating, so both see the same machine. JSON out, median, min and max of
`--runs` runs.

    .venv/bin/python bench/embeddings.py --texts 1000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.spread import add_runs, summarise  # noqa: E402
from libs.common.settings import REPO_ROOT  # noqa: E402
from services.triage.tickets.corpus import read_labelled  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "tickets" / "it_service_tickets.csv.gz"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--texts", type=int, default=1000, help="how many ticket texts each run encodes")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--baseline", action="store_true", help="also sentence-transformers on torch")
    add_runs(ap)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _, texts, _ = read_labelled(DATA, "Document", "Topic_group")
    texts = texts[: args.texts]

    from threadpoolctl import threadpool_limits

    from libs.common.minilm import MiniLM, model_dir

    threadpool_limits(limits=1, user_api="blas")  # as the embedder sets it
    engines = {"onnx": MiniLM(Path(tempfile.mkdtemp()))}
    if args.baseline:
        from sentence_transformers import SentenceTransformer

        engines["torch"] = SentenceTransformer(str(model_dir()), device="cpu")
    for engine in engines.values():  # warm: first calls allocate
        engine.encode(texts[:64], batch_size=args.batch_size, normalize_embeddings=True)
    runs = []
    for _ in range(args.runs):
        figures: dict[str, float] = {}
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
            figures[f"{name}_texts_per_s"] = round(len(texts) / (time.perf_counter() - start), 1)
        if "torch" in engines:
            figures["onnx_over_torch"] = round(figures["onnx_texts_per_s"] / figures["torch_texts_per_s"], 3)
        runs.append(figures)
        print(json.dumps(figures), file=sys.stderr, flush=True)
    print(json.dumps(summarise("embeddings", runs) | {"texts": len(texts)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
