#!/usr/bin/env python3
"""Prints the plateaus of a heap profile (massif format, from `heaptrack_print -M`): runs of
at least 30 snapshots whose live heap stays within 1 MiB. For the ADS benchmark they are, in
order: the storm's proxies idle, one per VirtualService change, after the endpoint change,
and after the extra proxies (the last one)."""

import re
import sys

heap = [int(v) / 2**20 for v in re.findall(r"mem_heap_B=(\d+)", open(sys.argv[1]).read())]
plateaus = []
i = 0
while i < len(heap):
    j = i
    while j + 1 < len(heap) and abs(heap[j + 1] - heap[i]) < 1.0:
        j += 1
    if j - i >= 30:
        plateaus.append(heap[i])
    i = j + 1
print("live heap plateaus (MiB):", " ".join(f"{p:.1f}" for p in plateaus))
