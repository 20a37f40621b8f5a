from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length

#: Longest prompt text accepted, in characters.
MAX_TITLE_LENGTH = 500

#: Longest description accepted, in characters.
MAX_DESCRIPTION_LENGTH = 5000


class PromptForm(FlaskForm):
    """The prompt text and an optional photo, as used by the edit page."""

    title = StringField(
        "Prompt",
        validators=[DataRequired(), Length(max=MAX_TITLE_LENGTH)],
        description="What the variations should show, for example 'a watercolor portrait'.",
    )
    description = TextAreaField(
        "Notes", validators=[Length(max=MAX_DESCRIPTION_LENGTH)], description="Only you see this."
    )
    image = FileField("Photo", description="JPEG, PNG or WebP, up to 10 MB.")


class NewPromptForm(PromptForm):
    """The create page, where a photo is required."""

    image = FileField(
        "Photo",
        validators=[FileRequired("Choose a photo to upload.")],
        description="JPEG, PNG or WebP, up to 10 MB.",
    )
