"""The operator console's first pages: users with balances and debts, a user's wallet, route
health — and nothing of it for a user."""

from __future__ import annotations

from tests.fixtures.gateway import CHAT, World
from tests.web.helpers import session_client


class TestOperatorConsole:
    def test_users_with_their_balances_per_bucket_and_debts(self, world: World) -> None:
        debtor = world.new_user(credit=1_000_000_000)
        world.make.spend(debtor.id, 1_000_000_000, bucket="credit")
        world.make.refund(debtor.id, 1_250_000_000, bucket="credit")
        with session_client(world.base_url, world.make.session_token(world.operator)) as ops:
            listing = ops.get("/operator")
            detail = ops.get(f"/operator/users/{world.user.id}")
        assert listing.status_code == 200
        assert world.user.email in listing.text and "$5.00" in listing.text
        assert "¥5.00" in listing.text
        assert "Credit: $1.25" in listing.text  # the debtor's debt, exact
        assert detail.status_code == 200
        assert 'data-testid="balance-credit">$5.00<' in detail.text
        assert 'data-testid="balance-routed">¥5.00<' in detail.text

    def test_route_health_shows_channels_and_circuits(self, world: World) -> None:
        with world.openai() as client:
            client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
        with session_client(world.base_url, world.make.session_token(world.operator)) as ops:
            text = ops.get("/operator/route-health").text
        assert "tg-chat" in text and "closed" in text

    def test_a_user_is_refused_with_a_readable_page(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            for path in (
                "/operator",
                f"/operator/users/{world.operator.id}",
                "/operator/route-health",
            ):
                response = client.get(path)
                assert response.status_code == 403
                assert "text/html" in response.headers["content-type"]
                assert "operators only" in response.text
            assert "Operator console" not in client.get("/").text

    def test_an_unknown_user_is_a_readable_404(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.operator)) as ops:
            response = ops.get("/operator/users/999999")
        assert response.status_code == 404 and "Traceback" not in response.text
