"""Hand-edited or hostile local files and arguments: a batch row nested 100,000 deep, a journal
line with an impossible index, balances and prices beyond the ledger's precision. Each is a clear
refusal naming what is wrong (CLI: exit 2, one line, no traceback), never a crash, a
MemoryError, or a stored value that breaks the account later."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from helpers import LOCALNET_CLI, MODEL, InMemoryHTTP, local_network

from trio_sogni.fanout._journal import MAX_JOURNAL_INDEX, Journal, JournalError
from trio_sogni.localnet import MAX_AMOUNT, Pricing

ROW = {"messages": [{"role": "user", "content": "x"}]}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_deep_batch_row_exits_2_naming_its_line(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_text(json.dumps(ROW) + "\n" + "[" * 100_000 + "\n")
    out = run(
        "-m", "trio_sogni", "batch", str(requests), "-o", str(output), "--simulated",
        "--model", MODEL,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "line 2:" in out.stderr
    assert "nested too deeply" in out.stderr
    assert "Traceback" not in out.stderr
    assert not output.exists()


@pytest.mark.parametrize("index", [-1, MAX_JOURNAL_INDEX + 1, 10**18, 10**30, 1e18, "0", True, [0]])
def test_a_journal_line_with_an_impossible_index_is_refused_naming_the_line(
    tmp_path: Path, index: object
) -> None:
    path = tmp_path / "j.jsonl"
    Journal.open(path).close()
    with path.open("a") as file:
        file.write(json.dumps({"kind": "outcome", "index": index, "status": "ok"}) + "\n")
        file.write(json.dumps({"kind": "outcome", "index": 0, "status": "ok"}) + "\n")
    with pytest.raises(JournalError, match=r"j\.jsonl:2: not a journal record"):
        Journal.open(path, resume=True)


def test_the_largest_journal_index_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal.open(path).close()
    with path.open("a") as file:
        file.write(json.dumps({"kind": "outcome", "index": 1000, "status": "ok"}) + "\n")
    with Journal.open(path, resume=True) as journal:
        assert set(journal.done_indices()) == {1000}


@pytest.mark.parametrize("balance", ["1e400", "1e16", "10000000000000000", "-1e400"])
def test_the_cli_refuses_a_balance_beyond_the_ledger(balance: str) -> None:
    out = run("-c", LOCALNET_CLI, "--user", f"alice:pw:{balance}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "BALANCE must" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_cli_refuses_prices_beyond_the_ledger(tmp_path: Path) -> None:
    for prices in ('{"default": {"input": 1e400, "output": 1}}', '{"usdPerSogni": 1e-30}'):
        path = tmp_path / "prices.json"
        path.write_text(prices)
        out = run("-c", LOCALNET_CLI, "--prices", str(path))
        assert out.returncode == 2, out.stderr[-2000:]
        assert "--prices: prices" in out.stderr
        assert "Traceback" not in out.stderr
    with pytest.raises(ValueError, match="between"):
        Pricing(usd_per_million_tokens=Decimal("1e400"))


async def test_amounts_beyond_the_ledger_are_refused_and_never_stored(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    database = tmp_path / "net.sqlite"
    async with local_network(listen=False, database=str(database)) as net:
        for balance in ("1e400", Decimal("1e16"), 10**16):
            with pytest.raises(ValueError, match="below 1e16"):
                net.add_account("carol", password="pw", balance=balance)
        with pytest.raises(KeyError):
            net.get_account("carol")
        net.add_account("dave", password="pw", balance=MAX_AMOUNT - 1)
        with pytest.raises(ValueError, match="cannot exceed"):
            net.fund("dave", 2)
        with pytest.raises(ValueError, match="below 1e16"):
            net.fund("dave", "1e400")
        assert net.balance("dave") == MAX_AMOUNT - 1
        net.fund("dave", 1)
        assert net.balance("dave") == MAX_AMOUNT
    async with local_network(listen=False, database=str(database)) as net:
        assert net.balance("dave") == MAX_AMOUNT  # still usable after a restart
        key = net.create_api_key("dave")
        async with httpx.AsyncClient(transport=InMemoryHTTP(net), base_url="http://l") as http:
            answer = await http.get("/v4/account/balance", headers={"api-key": key})
        assert answer.status_code == 200
        assert answer.json()["data"]["sogni"]["net"] == str(MAX_AMOUNT)
