"""The ``trio-sogni`` command (console script ``trio_sogni._cli:main``, and
``python -m trio_sogni``).

========================  ===========================================================
module                    what
========================  ===========================================================
`._main`                  the parser and `main` (the only ``trio.run``)
`._connect`               connection options shared by ``chat``, ``batch`` and the media
                          commands; opening a client on a remote Supernet or on an
                          embedded local one
`._chat`                  ``trio-sogni chat``
`._batch`                 ``trio-sogni batch`` (through `trio_sogni.fanout`)
`._generate`              ``trio-sogni image``, ``video``, ``music`` (one media project)
`._localnet`              ``trio-sogni localnet serve``
========================  ===========================================================

The CLI uses only public names of the client, `trio_sogni.fanout`, `trio_sogni.localnet` and
`trio_sogni.protocol` (tests/test_layering.py checks it).
"""

from ._main import main as main

__all__ = ["main"]
