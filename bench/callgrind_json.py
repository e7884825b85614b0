"""Instructions for `ingest.bodies.decode_job` of one JSON body, under callgrind (repeatable on a busy
machine, unlike a timing).

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.0 python bench/callgrind_json.py TREE CASE 0
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.20 python bench/callgrind_json.py TREE CASE 20
    # instructions a body: (total of cg.20 - total of cg.0) / 20, totals from callgrind_annotate

TREE is the checkout whose ``ingest`` is imported (``.``, or a ``git archive`` of another commit);
CASE is ``100-same`` (100 identical samples, `bench/post.lua`'s), ``1000-same`` or ``100-distinct``
(distinct names and tags, fractional timestamps); the last argument is how many times to decode it.
"""

from __future__ import annotations

import sys

sys.path.insert(0, sys.argv[1])

from ingest import bodies

SAME = '{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}'
DISTINCT = ",".join(
    f'{{"name":"metric.{i % 37}.load","value":{i * 0.37!r},"timestamp":{1_700_000_000 + i * 0.25!r},'
    f'"tags":{{"host":"web-{i}","dc":"eu-west","rack":"r{i % 7}"}}}}'
    for i in range(100)
)
CASES = {
    "100-same": "[" + ",".join([SAME] * 100) + "]",
    "1000-same": "[" + ",".join([SAME] * 1000) + "]",
    "100-distinct": "[" + DISTINCT + "]",
}

body = CASES[sys.argv[2]].encode()
for _ in range(int(sys.argv[3])):
    bodies.decode_job(bodies.Job(bodies.JSON, body, 1_700_000_000_123_456_789))
