"""``maskproxy bench``: how fast masking is, stage by stage and in live consults.

It owns the clips it runs on (:mod:`.clips`), the offline per-stage timings with
their baselines (:mod:`.offline`) and live consults through a real ``maskproxy serve``
with aiortc clients (:mod:`.live`).

Offers: ``run_bench`` and ``add_arguments`` (offline), ``free_port`` (live).
Depends on :mod:`proxy.pipeline`, :mod:`proxy.consult` and below; nothing imports it but the CLI.
"""
