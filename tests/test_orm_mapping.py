"""Row tags where a column's values are not the written model's pks: an upper-case pk
column, a second concrete parent (another pk for the same row), and many-to-many links
through a ``ForeignKey(to_field=...)`` (``m2m_changed`` sends that field's values)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from django_smartcache import model_tag
from tests.testapp.models import (
    Article,
    Awarded,
    Badge,
    Course,
    Enrollment,
    Guild,
    Legacy,
    Place,
    PlaceArticle,
    Student,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache(tagged_cache: Any) -> Any:
    return tagged_cache


def test_bulk_create_with_pks_reaches_the_row_under_an_upper_case_pk_column(
    cache: Any,
) -> None:
    cache.set("legacy:7", "absent", tags=[model_tag(Legacy, 7)])
    Legacy.objects.bulk_create([Legacy(pk=7, name="seven")])
    assert cache.get("legacy:7") is None
    cache.set("legacy:7", "seven", tags=[model_tag(Legacy, 7)])
    with connection.cursor() as cursor:
        cursor.execute('UPDATE testapp_legacy SET name = %s WHERE "ID" = %s', ["7", 7])
    assert cache.get("legacy:7") is None


def test_a_second_parents_write_reaches_the_child_row(cache: Any) -> None:
    Article.objects.create(headline="padding")  # the child's two pks differ
    child = PlaceArticle.objects.create(name="p", headline="old")
    assert child.pk != child.article_id
    tags = [model_tag(child)]
    cache.set("child", "old", tags=tags)
    PlaceArticle.objects.filter(pk=child.pk).update(headline="new")
    assert cache.get("child") is None
    cache.set("child", "new", tags=tags)
    Article.objects.get(pk=child.article_id).save()
    assert cache.get("child") is None
    cache.set("child", "new", tags=tags)
    with transaction.atomic():
        Article.objects.filter(pk=child.article_id).update(headline="newer")
    assert cache.get("child") is None


def test_the_first_parents_write_still_names_the_child_row_alone(cache: Any) -> None:
    child = PlaceArticle.objects.create(name="p", headline="h")
    other = PlaceArticle.objects.create(name="q", headline="h")
    cache.set("other", "kept", tags=[model_tag(other)])
    Place.objects.filter(pk=child.pk).update(name="renamed")
    assert cache.get("other") == "kept"
    # Its Article part's rows are not known by the child's pk: all of them.
    Article.objects.filter(pk=child.article_id).update(headline="new")
    assert cache.get("other") is None


def test_m2m_through_a_text_to_field_neither_fails_nor_misses(cache: Any) -> None:
    student = Student.objects.create(code="S-1")
    course = Course.objects.create()
    cache.set("courses", [], tags=[model_tag(student)])
    course.students.add(student)
    assert list(student.courses.all()) == [course]
    assert cache.get("courses") is None
    cache.set("courses", [course.pk], tags=[model_tag(student)])
    Enrollment.objects.filter(course=course).delete()
    assert cache.get("courses") is None
    cache.set("courses", [], tags=[model_tag(student)])
    Enrollment.objects.create(student=student, course=course)
    assert cache.get("courses") is None


def test_m2m_through_an_integer_to_field_invalidates_the_linked_row(
    cache: Any,
) -> None:
    badge = Badge.objects.create(number=1000)
    guild = Guild.objects.create()
    cache.set("guilds", [], tags=[model_tag(badge)])
    guild.badges.add(badge)
    assert cache.get("guilds") is None
    cache.set("guilds", [guild.pk], tags=[model_tag(badge)])
    guild.badges.remove(badge)
    assert cache.get("guilds") is None
    cache.set("guilds", [], tags=[model_tag(badge)])
    Awarded.objects.bulk_create([Awarded(badge=badge, guild=guild)])
    assert cache.get("guilds") is None
