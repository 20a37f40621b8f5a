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

#: Format characters that render as nothing and that str.strip() keeps: zero-width space,
#: zero-width non-joiner, zero-width joiner, word joiner and byte order mark.
INVISIBLE_CHARACTERS = "\u200b\u200c\u200d\u2060\ufeff"


def check_prompt_text(form, field):
    """Reject a prompt with a control character, or with nothing left once whitespace and
    invisible characters are removed. Empty input is left to DataRequired."""
    text = field.data or ""
    if not text:
        return
    for position, character in enumerate(text, start=1):
        # Category Cc is the C0 controls (NUL to U+001F, tab and newline included), DEL and C1.
        if unicodedata.category(character) == "Cc":
            raise StopValidation(
                f"The prompt contains the control character U+{ord(character):04X} at"
                f" position {position}. Remove it and try again."
            )
    visible = text.translate({ord(character): None for character in INVISIBLE_CHARACTERS})
    if not visible.strip():
        raise StopValidation(
            "The prompt contains only spaces or invisible characters."
            " Enter the words the variations should show."
        )


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
        validators=[Length(max=settings.MAX_NEGATIVE_PROMPT_LENGTH)],
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
