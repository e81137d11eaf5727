"""open_local_network takes one frozen LocalNetworkConfig, keyword arguments, or both."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import get_type_hints

import pytest
import trio

from trio_sogni.localnet import (
    LocalNetworkConfig,
    LocalNetworkOptions,
    SimulatedWorker,
    open_local_network,
    serve_local_network,
)


def test_options_are_exactly_the_config_fields() -> None:
    fields = [f.name for f in dataclasses.fields(LocalNetworkConfig)]
    assert list(get_type_hints(LocalNetworkOptions)) == fields


def test_config_is_frozen() -> None:
    config = LocalNetworkConfig(port=1234)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert dataclasses.replace(config, listen=False).port == 1234


async def test_a_config_keywords_and_both() -> None:
    config = LocalNetworkConfig(listen=False, models=["m1", "m2"], api_key="k", workers=2)
    async with open_local_network(config) as net:
        assert sorted(net.models) == ["m1", "m2"]
        assert net.api_key == "k"
        assert [w.name for w in net.workers] == ["localnet-worker-1", "localnet-worker-2"]
    async with open_local_network(listen=False, api_key="k2") as net:
        assert net.api_key == "k2"
    async with open_local_network(config, api_key="k3", workers=[SimulatedWorker("w")]) as net:
        assert net.api_key == "k3"
        assert sorted(net.models) == ["m1", "m2"]
        assert [w.name for w in net.workers] == ["w"]


async def test_serve_local_network_takes_a_config() -> None:
    async with trio.open_nursery() as nursery:
        net = await nursery.start(partial(serve_local_network, LocalNetworkConfig(api_key="s")))
        assert net.api_key == "s"
        assert net.port > 0
        nursery.cancel_scope.cancel()
