"""The client address behind trusted proxies, and the failed-claim limit keyed on it."""

from __future__ import annotations

import pytest

from tallygate.credits.throttle import client_address
from tests.credits.conftest import Serve, as_operator, as_user, create_campaign, generate, redeem

PROXIES = ["10.0.0.0/8", "127.0.0.1"]


class TestClientAddress:
    def test_the_header_is_ignored_from_an_untrusted_peer(self) -> None:
        assert client_address("198.51.100.4", "1.2.3.4", PROXIES) == "198.51.100.4"
        assert client_address("127.0.0.1", "1.2.3.4", []) == "127.0.0.1"

    def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client(self) -> None:
        assert client_address("127.0.0.1", "1.2.3.4", PROXIES) == "1.2.3.4"
        # A client cannot pick its address by sending its own header: the hop our proxy
        # appended (the one it saw) wins over anything to its left.
        assert client_address("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9", PROXIES) == "1.2.3.4"

    def test_garbage_or_all_trusted_chains_fall_back_sensibly(self) -> None:
        assert client_address("127.0.0.1", "not-an-ip", PROXIES) == "127.0.0.1"
        assert client_address("127.0.0.1", "10.1.1.1, 10.2.2.2", PROXIES) == "10.1.1.1"
        assert client_address(None, None, PROXIES) == "unknown"


class TestLimitPerAddress:
    @pytest.mark.parametrize(
        ("trusted", "locked"), [(["127.0.0.1"], False), ([], True)], ids=["trusted", "untrusted"]
    )
    def test_forwarded_addresses_count_separately_only_behind_a_trusted_proxy(
        self, serve: Serve, trusted: list[str], locked: bool
    ) -> None:
        with serve(trusted_proxies=trusted, redeem_max_failures=3) as live:
            with as_operator(live) as ops:
                made = create_campaign(ops, amount="1")
                (valid,) = generate(ops, made["id"])
            for i in range(3):
                forwarded = {"X-Forwarded-For": f"203.0.113.{i}"}
                with as_user(live, live.make.user(), **forwarded) as http:
                    assert redeem(http, "WRONG-CODE").status_code == 404
            fresh = {"X-Forwarded-For": "198.51.100.200"}
            with as_user(live, live.make.user(), **fresh) as http:
                status = redeem(http, valid).status_code
        assert status == (429 if locked else 201)
