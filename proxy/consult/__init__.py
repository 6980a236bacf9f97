"""Live consults: the HTTP API, the rooms, and the WebRTC media between patient, proxy and doctor.

It owns ``maskproxy serve`` (:mod:`.server`), rooms with their roles, tokens and
peer connections (:mod:`.rooms`), the masking worker of one consult
(:mod:`.worker`) and the turns the consults take to mask (:mod:`.gate`), the
tracks the proxy sends (:mod:`.tracks`), settings (:mod:`.config`), ICE/TURN
(:mod:`.ice`), metrics, logs and figures (:mod:`.metrics`, :mod:`.logs`,
:mod:`.stats`), a scripted aiortc participant
(:mod:`.client`), a patch to one of aiortc's helpers (:mod:`.aiortc_speedups`), and the
eye examination of a consult with the doctor's eye close-up (:mod:`.exam_link`), and a
consult's recording with the patient's consent (:mod:`.recording_link`) and the recordings'
routes (:mod:`.recording_api`), over :mod:`proxy.recording`.

Offers: ``create_app`` and ``run_server`` (server), ``Config`` (config),
``ConsultClient`` (client). Depends on :mod:`proxy.pipeline` and below; the live
path's rule (only the newest camera frame waits) lives in :mod:`.worker`.
"""
