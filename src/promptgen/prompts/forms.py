import unicodedata

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, StopValidation

from .. import settings
from .fields import FiniteDecimalField, WholeNumberField

#: Maximum length of the prompt text, in characters.
MAX_TITLE_LENGTH = 500

#: Maximum length of the description, in characters.
MAX_DESCRIPTION_LENGTH = 5000

#: Characters a prompt cannot contain besides control characters: line and paragraph
#: separators, bidirectional embeddings, overrides and isolates, which change how the
#: text around them is shown, and U+FFFD, which stands for bytes that were not UTF-8.
REJECTED_CHARACTERS = frozenset(
    "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufffd"
)

#: Unicode categories whose characters show nothing on their own: controls, format
#: characters (zero-width space, soft hyphen, tags), surrogates, spaces, separators and
#: combining marks.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})

#: Letters that render as blank space: the Hangul fillers.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def character_problem(text, label):
    """Return a message about the first character that text may not contain, or None."""
    for position, character in enumerate(text, start=1):
        category = unicodedata.category(character)
        if category in ("Cc", "Cs") or character in REJECTED_CHARACTERS:
            kind = "control character" if category == "Cc" else "character"
            return (
                f"The {label} contains the {kind} U+{ord(character):04X} at position"
                f" {position}. Remove it and try again."
            )
    return None


def has_visible_character(text):
    """Return True if some character of text shows on its own."""
    return any(
        unicodedata.category(character) not in INVISIBLE_CATEGORIES
        and character not in BLANK_LETTERS
        for character in text
    )


def check_prompt_text(form, field):
    """Reject a prompt with a character it may not contain, or with no visible character.

    Empty input is left to DataRequired.
    """
    text = field.data or ""
    if not text:
        return
    problem = character_problem(text, "prompt")
    if problem is not None:
        raise StopValidation(problem)
    if not has_visible_character(text):
        raise StopValidation(
            "The prompt contains only spaces or invisible characters."
            " Enter the words the variations should show."
        )


def check_negative_prompt(form, field):
    """Reject a negative prompt with a character that a prompt may not contain."""
    problem = character_problem(field.data or "", "negative prompt")
    if problem is not None:
        raise StopValidation(problem)


class PromptForm(FlaskForm):
    """The prompt text and an optional photo, as used by the edit page."""

    title = StringField(
        "Prompt",
        validators=[check_prompt_text, DataRequired(), Length(max=MAX_TITLE_LENGTH)],
        description="What the variations should show, for example 'a watercolor portrait'.",
    )
    description = TextAreaField(
        "Notes", validators=[Length(max=MAX_DESCRIPTION_LENGTH)], description="Only you see this."
    )
    image = FileField("Photo", description="JPEG, PNG or WebP, up to 10 MB.")


class SettingsForm(FlaskForm):
    """The model settings of one prediction, with the model's defaults."""

    prompt_strength = FiniteDecimalField(
        "Prompt strength",
        default=settings.DEFAULTS["prompt_strength"],
        places=2,
        validators=[
            Optional(),
            NumberRange(settings.MIN_PROMPT_STRENGTH, settings.MAX_PROMPT_STRENGTH),
        ],
        description="0 keeps the photo, 1 follows only the prompt.",
    )
    num_outputs = WholeNumberField(
        "Images",
        default=settings.DEFAULTS["num_outputs"],
        validators=[Optional(), NumberRange(settings.MIN_OUTPUTS, settings.MAX_OUTPUTS)],
        description=f"{settings.MIN_OUTPUTS} to {settings.MAX_OUTPUTS} per run.",
    )
    num_inference_steps = WholeNumberField(
        "Inference steps",
        default=settings.DEFAULTS["num_inference_steps"],
        validators=[Optional(), NumberRange(settings.MIN_STEPS, settings.MAX_STEPS)],
        description="More steps take longer and add detail.",
    )
    guidance_scale = FiniteDecimalField(
        "Guidance scale",
        default=settings.DEFAULTS["guidance_scale"],
        places=1,
        validators=[Optional(), NumberRange(settings.MIN_GUIDANCE, settings.MAX_GUIDANCE)],
        description="How closely the image follows the prompt.",
    )
    scheduler = SelectField(
        "Scheduler",
        choices=settings.SCHEDULERS,
        default=settings.DEFAULTS["scheduler"],
    )
    seed = WholeNumberField(
        "Seed",
        validators=[Optional(), NumberRange(0, settings.MAX_SEED)],
        description="Leave empty for a random seed.",
    )
    negative_prompt = StringField(
        "Negative prompt",
        validators=[check_negative_prompt, Length(max=settings.MAX_NEGATIVE_PROMPT_LENGTH)],
        description="What the image should not show.",
    )

    def to_settings(self):
        """Return the submitted settings as plain values; an empty field takes its default."""
        values = {name: getattr(self, name).data for name in settings.DEFAULTS}
        values = {name: settings.DEFAULTS[name] if value is None else value for name, value in values.items()}
        values["prompt_strength"] = float(values["prompt_strength"])
        values["guidance_scale"] = float(values["guidance_scale"])
        values["negative_prompt"] = values["negative_prompt"].strip()
        return values


class NewPromptForm(PromptForm, SettingsForm):
    """The create page, where a photo is required and the first run's settings are chosen."""

    image = FileField(
        "Photo",
        validators=[FileRequired("Choose a photo to upload.")],
        description="JPEG, PNG or WebP, up to 10 MB.",
    )
