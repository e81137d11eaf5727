"""The accounts layer: identities, credentials and money.

* ``_store``: the SQLite store (accounts, API keys, refresh tokens, balances);
* ``_jwt``, ``_wallets``: HS256 tokens and EIP-712 signature recovery (eth-account on first use);
* ``_ledger``: balances, holds and settlement;
* ``_accounts``: :class:`Accounts` (sign-up, login, nonces, sessions, API keys);
* ``_routes``: :func:`account_routes` and :func:`profile_routes` (REST routers).

Imports ``_server`` (for its routes), :mod:`trio_sogni.protocol` and the shared leaves only.
"""
