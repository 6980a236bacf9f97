"""``maskproxy audit``: the privacy and fidelity evidence, on a clinic's own material.

It owns the command (:mod:`.command`), re-identification by face recognition
(:mod:`.reid`), the fidelity round trip track(original) vs track(mask)
(:mod:`.fidelity`) and the plots, HTML report and human test kit (:mod:`.report`).
Needs the ``audit`` extra (dlib, matplotlib).

Offers: ``run_audit`` and ``add_arguments`` (command). Depends on
:mod:`proxy.pipeline`, :mod:`proxy.files`, :mod:`proxy.tracking` and :mod:`proxy.avatar`;
nothing on the live path imports it.
"""
