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


class PatternForm(forms.Form):
    pattern = forms.CharField(max_length=200, initial="shop:product:*")
    regex = forms.BooleanField(required=False)


class TagForm(forms.Form):
    tag = forms.CharField(max_length=200)
