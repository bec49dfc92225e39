"""Redeem code text: generation, normalisation and the HMAC (no database)."""

from __future__ import annotations

import math

from tallygate.credits import codes


class TestGenerate:
    def test_codes_are_grouped_crockford_base32_with_at_least_60_secret_bits(self) -> None:
        code, visible = codes.generate("welcome")
        prefix, *groups = code.split("-")
        assert prefix == "WELCOME" and visible == f"WELCOME-{groups[0]}"
        assert [len(g) for g in groups] == [4, 4, 4, 4]
        assert not set("".join(groups)) & set("ILOU")
        hidden = codes.RANDOM_CHARS - codes.GROUP  # the visible group is not secret
        assert hidden * math.log2(len(codes.ALPHABET)) >= 60

    def test_without_a_prefix_the_first_group_is_the_visible_part(self) -> None:
        code, visible = codes.generate()
        assert len(code) == 19 and visible == code[:4]

    def test_codes_do_not_repeat(self) -> None:
        assert len({codes.generate()[0] for _ in range(2000)}) == 2000


class TestNormalise:
    def test_case_separators_and_look_alike_letters_do_not_matter(self) -> None:
        assert codes.normalise(" welcome-7k3m 9qxr_2tzb-f4hd ") == "WE1C0ME7K3M9QXR2TZBF4HD"
        assert codes.normalise("O0-Il1") == "00111"

    def test_the_digest_is_of_the_normalised_code_under_the_secret(self) -> None:
        a = codes.digest("secret", "ABCD-EF01-2345-6789")
        assert a == codes.digest("secret", "abcd ef0l 2345 6789")
        assert a != codes.digest("other secret", "ABCD-EF01-2345-6789")
        assert len(a) == 64
