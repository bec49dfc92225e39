from tests.fixtures.server import live, make_app

__all__ = ["live", "make_app"]
