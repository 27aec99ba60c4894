"""``manage.py seed``: the demo catalogue (idempotent: rows are matched by slug)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.text import slugify

from shop.models import Category, Product, Tag

#: category -> [(name, price, stock, tags, description)]
CATALOGUE: dict[str, list[tuple[str, str, int, tuple[str, ...], str]]] = {
    "Coffee": [
        ("Espresso beans", "14.90", 40, ("organic", "bestseller"), "Dark roast, 1 kg."),
        ("Filter blend", "11.50", 25, ("organic",), "Medium roast for pour-over."),
        ("Decaf", "12.00", 8, (), "Swiss water process."),
    ],
    "Tea": [
        ("Sencha", "9.80", 30, ("organic",), "Japanese green tea, 100 g."),
        ("Earl Grey", "7.40", 55, ("bestseller",), "Black tea with bergamot."),
        ("Rooibos", "6.90", 0, ("caffeine-free",), "Red bush, naturally sweet."),
    ],
    "Kitchen": [
        ("Moka pot", "34.00", 12, ("gift",), "Six cups, aluminium."),
        ("Hand grinder", "59.00", 5, ("gift", "bestseller"), "Ceramic burrs."),
        ("Tea kettle", "42.50", 9, ("gift",), "Gooseneck, 1 l."),
    ],
}


class Command(BaseCommand):
    help = "Create the demo categories, tags and products (safe to run again)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
        with transaction.atomic():
            for category_name, products in CATALOGUE.items():
                category, _ = Category.objects.get_or_create(
                    slug=slugify(category_name), defaults={"name": category_name}
                )
                for name, price, stock, tag_names, description in products:
                    product, new = Product.objects.get_or_create(
                        slug=slugify(name),
                        defaults={
                            "category": category,
                            "name": name,
                            "price": Decimal(price),
                            "stock": stock,
                            "description": description,
                        },
                    )
                    created += new
                    if new:
                        tags = [Tag.objects.get_or_create(name=t)[0] for t in tag_names]
                        product.tags.set(tags)
        self.stdout.write(
            f"Seeded {created} new product(s); the shop has "
            f"{Category.objects.count()} categories, {Product.objects.count()} products "
            f"and {Tag.objects.count()} tags."
        )
