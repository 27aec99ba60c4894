"""The product edit form: saving it is what invalidates the cached pages."""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms

from .models import Product


class ProductForm(forms.ModelForm):
    class Meta:
        model = Product
        fields = ("name", "category", "price", "stock", "description", "tags")
        widgets: ClassVar[dict[str, Any]] = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "tags": forms.CheckboxSelectMultiple,
        }


class _OneFieldForm(forms.Form):
    """A form whose errors are shown as one message (the tools page's flash)."""

    def error_message(self) -> str:
        return " ".join(str(e) for errors in self.errors.values() for e in errors)


def _messages(what: str) -> dict[str, str]:
    """Say what is wrong: empty, or longer than ``max_length`` (it said "required")."""
    return {
        "required": f"{what} is required.",
        "max_length": f"{what} is at most %(limit_value)d characters "
        "(this one has %(show_value)d).",
    }


class PatternForm(_OneFieldForm):
    pattern = forms.CharField(
        max_length=200, initial="shop:product:*", error_messages=_messages("A pattern")
    )
    regex = forms.BooleanField(required=False)


class TagForm(_OneFieldForm):
    tag = forms.CharField(max_length=200, error_messages=_messages("A tag"))
