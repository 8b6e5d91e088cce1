"""The child process of ``EdgeStore.build_index``: build the HNSW index of a shard copy.

    python -m retrieval.store.edge_index COPY --dim=384 --parent-pid=PID [--keywords] \\
        --m=16 --ef-construct=100 --full-scan-threshold-kb=10000

``EdgeShard.optimize()`` holds the GIL for its whole run (minutes at 100k chunks); in its own
process, at a lower CPU priority, it stalls no request of the server. Exit status 0 means the
copy is built and flushed; anything else is reported by the parent with this process's stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

import qdrant_edge as qe

from retrieval.store.edge_shard import HnswParams, edge_config

#: Qdrant leaves segments under its indexing threshold (10 MB of vectors) plain; asked to
#: build an index, we build it for every segment that holds a vector.
INDEX_EVERY_SEGMENT_KB = 1
#: The server's requests come first: the build takes the CPU they leave.
NICENESS = 10
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Be killed when the parent dies (Linux): an orphan would go on writing a copy that the
    next server start deletes and makes again. The signal fires when the parent's thread that
    started us ends, and that thread waits on us for our whole run."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        sys.exit(f"parent {parent_pid} is gone")


def build(path: str, dim: int, hnsw: HnswParams, *, keywords: bool) -> None:
    """Load the copy with the HNSW parameters, optimise it until nothing is left to do,
    flush and close it."""
    optimizers = qe.EdgeOptimizersConfig(indexing_threshold=INDEX_EVERY_SEGMENT_KB)
    shard = qe.EdgeShard.load(path, edge_config(dim, hnsw, optimizers, keywords=keywords))
    shard.optimize()
    shard.flush()
    shard.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="the shard copy (it is changed in place)")
    ap.add_argument("--dim", type=int, required=True, help="the collection's vector size")
    ap.add_argument("--parent-pid", type=int, required=True)
    ap.add_argument("--keywords", action="store_true", help="the shard has keyword vectors")
    for flag in ("--m", "--ef-construct", "--full-scan-threshold-kb"):
        ap.add_argument(flag, type=int, required=True, help="see HnswParams")
    args = ap.parse_args()
    die_with_parent(args.parent_pid)
    os.nice(NICENESS)
    hnsw = HnswParams(args.m, args.ef_construct, args.full_scan_threshold_kb)
    build(args.path, args.dim, hnsw, keywords=args.keywords)


if __name__ == "__main__":
    main()
