#!/usr/bin/env python3
"""Totals of a callgrind dump: instructions (Ir) and calls into the allocator.
usage: cgcount.py DUMP REQUESTS TAG"""
import re, sys
path, reqs, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = {}
total = None
calls = {}
cfn = None
alloc = {"malloc", "free", "realloc", "calloc", "mi_malloc", "mi_free", "mi_realloc",
         "mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned", "mi_calloc",
         "mi_zalloc", "mi_malloc_aligned_at", "mi_free_size", "mi_free_aligned",
         "__rust_alloc", "__rust_dealloc", "__rust_realloc", "__rust_alloc_zeroed"}
def name_of(spec):
    m = re.match(r"\((\d+)\)(?:\s+(.*))?", spec.strip())
    if not m:
        return spec.strip()
    if m.group(2) is not None:
        names[m.group(1)] = m.group(2).strip()
    return names.get(m.group(1), "?")
with open(path) as f:
    for line in f:
        if line.startswith("cfn="):
            cfn = name_of(line[4:])
        elif line.startswith("fn="):
            name_of(line[3:])
        elif line.startswith("calls=") and cfn is not None:
            n = int(line[6:].split()[0])
            # strip "file:" decoration is not in cfn names; keep as is
            if cfn in alloc:
                calls[cfn] = calls.get(cfn, 0) + n
            cfn = None
        elif line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1])
parts = [f"{tag} Ir={total} requests={reqs} Ir/req={total // reqs if total else 0}"]
for k in sorted(calls):
    parts.append(f"{k}/req={calls[k] / reqs:.1f}")
print(" ".join(parts))
