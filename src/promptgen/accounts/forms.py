from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Email, Length

#: Shortest password accepted at sign-up, in characters.
MIN_PASSWORD_LENGTH = 12


def strip_whitespace(value):
    return value.strip() if isinstance(value, str) else value


class SignupForm(FlaskForm):
    email = EmailField(
        "Email",
        filters=[strip_whitespace],
        validators=[DataRequired(), Email(), Length(max=254)],
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=256)],
        description=f"At least {MIN_PASSWORD_LENGTH} characters.",
    )


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])
