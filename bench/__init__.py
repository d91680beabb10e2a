"""PNS benchmarks: PNS figures next to bare baselines measured in the same run.

``python -m bench`` (or ``make bench``) starts real ``pnsd`` and ``pnsweb`` processes and the
bare baselines of this package (each a small module run as its own process), drives them from
a separate load process with interleaved trials, and writes ``bench/report.md`` and
``bench/report.png``. Only loopback and ipc:// are used; every load is bounded in count and
time; every process started is stopped. Nothing here is imported by the product.
"""
