"""Convert integers to Roman numerals and back.

Roman numerals use subtractive pairs such as IV (4), IX (9), XL (40) and
CM (900). Standard form covers 1 to 3999; the parser rejects malformed
strings like "IIII" or "VX" by round-tripping the result.
"""

# Value/symbol pairs from largest to smallest, including subtractive forms.
NUMERALS = [
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
    (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
    (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
]

SYMBOL_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def to_roman(number):
    """Return the Roman numeral for an integer between 1 and 3999."""
    if not isinstance(number, int) or not 1 <= number <= 3999:
        raise ValueError("Roman numerals are defined here for 1..3999")
    parts = []
    for value, symbol in NUMERALS:
        # Greedy: take the largest value that still fits, as often as it fits.
        count, number = divmod(number, value)
        parts.append(symbol * count)
    return "".join(parts)


def from_roman(text):
    """Parse a Roman numeral string and return its integer value."""
    text = text.strip().upper()
    if not text or any(ch not in SYMBOL_VALUES for ch in text):
        raise ValueError(f"invalid Roman numeral: {text!r}")
    total = 0
    for current, following in zip(text, text[1:] + " "):
        value = SYMBOL_VALUES[current]
        # A smaller symbol before a larger one is subtracted (e.g. the I in IX).
        if following != " " and value < SYMBOL_VALUES[following]:
            total -= value
        else:
            total += value
    # Reject non-canonical forms such as "IIII" or "IC".
    if not 1 <= total <= 3999 or to_roman(total) != text:
        raise ValueError(f"non-standard Roman numeral: {text!r}")
    return total


if __name__ == "__main__":
    for n in (4, 9, 14, 40, 90, 400, 1994, 2024, 3999):
        print(n, to_roman(n))
    print(from_roman("MCMXCIV"), from_roman("mmxxiv"))
    for bad in ("IIII", "VX", "ABC"):
        try:
            from_roman(bad)
        except ValueError as err:
            print("rejected:", err)
    # Every number round-trips.
    assert all(from_roman(to_roman(n)) == n for n in range(1, 4000))
