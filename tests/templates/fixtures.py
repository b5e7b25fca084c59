"""A realistic transactional template (an order receipt: a ~20 KB HTML layout with a `<style>`
block, media queries, Outlook conditional comments, loops and optional parts) and data for it,
shared by the template tests and the rendering benchmark."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYOUT_HTML = (Path(__file__).parent / "layout.html").read_text(encoding="utf-8")
LAYOUT_SUBJECT = "Your {{ brand.name }} order #{{ order.number }}"
LAYOUT_TEXT = ""  # the text part is made from the HTML


@dataclass
class Source:
    """A template's three sources, as render() reads them from a stored Template."""

    subject: str = ""
    text: str = ""
    html: str = ""


LAYOUT = Source(subject=LAYOUT_SUBJECT, text=LAYOUT_TEXT, html=LAYOUT_HTML)

_DATA: dict[str, Any] = {
    "language": "en",
    "brand": {
        "name": "Example Store",
        "legal_name": "Example Store Ltd",
        "url": "https://shop.example.com",
        "logo_url": "https://shop.example.com/static/logo.png",
        "address": "1 Market Street, Dublin D01 X2Y3, Ireland",
        "social": [
            {
                "name": "Instagram",
                "url": "https://instagram.example/shop",
                "icon": "https://shop.example.com/i/ig.png",
            },
            {
                "name": "Mastodon",
                "url": "https://mastodon.example/@shop",
                "icon": "https://shop.example.com/i/md.png",
            },
        ],
    },
    "user": {"first_name": "Ana", "email": "ana@example.net", "vip": True},
    "steps": [
        {"label": "Ordered", "done": True},
        {"label": "Packed", "current": True},
        {"label": "Shipped"},
        {"label": "Delivered"},
    ],
    "order": {
        "number": "A-10042",
        "placed_on": "25 November 2026",
        "currency": "€",
        "payment": {"method": "Visa", "last4": "4242"},
        "shipping": {
            "method": "Express",
            "eta": "27 November",
            "cost": 0,
            "address": {
                "name": "Ana Silva",
                "line1": "Rua das Flores 12",
                "postal_code": "1200-195",
                "city": "Lisboa",
                "country": "Portugal",
            },
        },
        "billing": {},
        "subtotal": 134.5,
        "discount": 10,
        "discount_code": "WELCOME10",
        "tax": 23.12,
        "total": 147.62,
        "items": [
            {"name": "Linen shirt", "variant": "Blue, M", "quantity": 1, "price": 59.0},
            {"name": "Canvas tote <large>", "quantity": 2, "price": 18.0},
            {"name": "Espresso cups (set of 4)", "variant": "Stoneware", "quantity": 1, "price": 39.5},
        ],
    },
    "recommendations": [
        {
            "name": "Linen trousers",
            "url": "https://shop.example.com/p/1",
            "image": "https://shop.example.com/p/1.jpg",
            "price": 69.0,
        },
        {
            "name": "Wool socks",
            "url": "https://shop.example.com/p/2",
            "image": "https://shop.example.com/p/2.jpg",
            "price": 12.0,
        },
        {
            "name": "Milk jug",
            "url": "https://shop.example.com/p/3",
            "image": "https://shop.example.com/p/3.jpg",
            "price": 21.0,
        },
    ],
}


def layout_data(items: int | None = None) -> dict[str, Any]:
    """Fresh data for LAYOUT; with `items`, that many order lines (the benchmark's knob)."""
    data = copy.deepcopy(_DATA)
    if items is not None:
        lines = data["order"]["items"]
        data["order"]["items"] = [dict(lines[i % len(lines)], name=f"Item {i + 1}") for i in range(items)]
    return data
