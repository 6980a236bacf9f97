"""Consults as Ray actors across machines: ``maskproxy serve --cluster ADDRESS``.

Owns the cluster backend of the consult API: each consult is a detached, named Ray actor
(``maskproxy-consult-<room>``, namespace ``maskproxy``) holding a :class:`proxy.consult.rooms.Room` on a
media node that declares the custom resource ``maskproxy_consult``; the HTTP API processes hold no
consult state and reach rooms through :class:`proxy.cluster.registry.ClusterRegistry`. Ray is imported
only here and only in cluster mode: the embedded default never loads it.

Offers: ``ClusterRegistry`` (create, find, delete consults; free slots and per-node counts),
``ConsultActor`` (one consult's Room, its expiry and its restart after a node's death) and
``local_cluster`` (a multi-node cluster on 127.0.0.1 for the tests and ``bench --live --cluster``).
"""
