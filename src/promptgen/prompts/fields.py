"""Number fields for model settings that accept only plain, finite numbers.

In WTForms 3.3, DecimalField passes NaN, infinity and sNaN on to its validators, and
NumberRange raises ValueError on sNaN. These fields reject such values while parsing, and
an invalid value then skips the range check, so the field shows a single message.
"""

import decimal
import math
import re

from wtforms import DecimalField, IntegerField
from wtforms.validators import NumberRange, StopValidation

#: A decimal number written with ASCII digits, an optional sign, point and exponent.
DECIMAL_PATTERN = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)

#: A whole number written with ASCII digits and an optional sign.
INTEGER_PATTERN = re.compile(r"[+-]?[0-9]+", re.ASCII)


class StrictNumberMixin:
    """Parse with parse_number() and stop validation when the value is not a number."""

    #: The kind of number the field accepts, as its error message names it.
    number_kind = "number"

    def process_formdata(self, valuelist):
        if not valuelist:
            return
        text = valuelist[0].strip()
        if not text:
            self.data = None
            return

        self.data = self.parse_number(text)
        if self.data is None:
            raise ValueError(self.invalid_message())

    def pre_validate(self, form):
        # The parse error is already in self.errors, and a range check would add a second.
        if self.process_errors:
            raise StopValidation()

    def invalid_message(self):
        """Return the message for a value that is not a number, with the field's range."""
        bounds = next((v for v in self.validators if isinstance(v, NumberRange)), None)
        message = f"Not a valid {self.number_kind}."
        if bounds is None:
            return message
        return f"{message} Enter a {self.number_kind} between {bounds.min} and {bounds.max}."


class FiniteDecimalField(StrictNumberMixin, DecimalField):
    """A DecimalField that rejects NaN, infinity and values too large for a float."""

    def parse_number(self, text):
        """Return text as a Decimal, or None unless it is a finite number a float can hold."""
        if not DECIMAL_PATTERN.fullmatch(text):
            return None
        try:
            number = decimal.Decimal(text)
        except decimal.InvalidOperation:  # an exponent beyond what decimal can represent
            return None
        if not math.isfinite(float(number)):
            return None
        return number


class WholeNumberField(StrictNumberMixin, IntegerField):
    """An IntegerField that accepts only ASCII digits with an optional sign."""

    number_kind = "whole number"

    def parse_number(self, text):
        """Return text as an int, or None unless it is a plain whole number."""
        if not INTEGER_PATTERN.fullmatch(text):
            return None
        try:
            return int(text)
        except ValueError:  # more digits than int() converts (4300 by default since Python 3.11)
            return None
