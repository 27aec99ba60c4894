"""FK, M2M (auto and custom through), multi-table inheritance, a proxy, an opted-out model."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Genre(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, models.CASCADE, related_name="books")
    genres = models.ManyToManyField(Genre, related_name="books", blank=True)

    def __str__(self) -> str:
        return self.title


class Club(models.Model):
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(Author, through="Membership", related_name="clubs")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    club = models.ForeignKey(Club, models.CASCADE)
    author = models.ForeignKey(Author, models.CASCADE)
    role = models.CharField(max_length=20, default="member")

    def __str__(self) -> str:
        return f"{self.author_id} in {self.club_id} ({self.role})"


class Place(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Restaurant(Place):
    serves_pizza = models.BooleanField(default=False)


class FamousAuthor(Author):
    class Meta:
        proxy = True


class AuditLog(models.Model):
    """Opted out in the tests' SMARTCACHE settings."""

    message = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.message


class City(models.Model):
    """A text primary key: any text must make a valid row tag."""

    name = models.CharField(max_length=255, primary_key=True)
    population = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class Brand(models.Model):
    """A text pk compared without case (SQLite's NOCASE; MySQL's default ``_ci``)."""

    slug = models.CharField(max_length=50, primary_key=True, db_collation="NOCASE")
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.slug


class Plain(models.Model):
    """A model of the mapping cases below: named by its pk."""

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.pk}"


class Legacy(Plain):
    """A legacy schema's upper-case pk column: SQL reads it lower-cased."""

    id = models.AutoField(primary_key=True, db_column="ID")
    name = models.CharField(max_length=100)


class Article(Plain):
    """Two concrete parents (Django's multiple inheritance): the child's pk is the
    link to ``Place``; its ``Article`` part has a pk of its own."""

    article_id = models.AutoField(primary_key=True)
    headline = models.CharField(max_length=100)


class PlaceArticle(Place, Article):
    pass


class BookSummary(models.Model):
    """An unmanaged model over a database view of Book and Author, made by the tests
    that read it (``tests/test_invalidation.py``)."""

    title = models.CharField(max_length=100)
    author_name = models.CharField(max_length=100)

    class Meta:
        managed = False
        db_table = "testapp_book_summary"

    def __str__(self) -> str:
        return self.title


class Student(Plain):
    code = models.CharField(max_length=20, unique=True)


class Course(Plain):
    """A through model whose link to ``Student`` holds its code, not its pk."""

    students = models.ManyToManyField(
        Student, through="Enrollment", related_name="courses"
    )


class Enrollment(Plain):
    student = models.ForeignKey(Student, models.CASCADE, to_field="code")
    course = models.ForeignKey(Course, models.CASCADE)


class Badge(Plain):
    number = models.IntegerField(unique=True)


class Guild(Plain):
    """As ``Course`` with an integer ``to_field``: its values look like pks."""

    badges = models.ManyToManyField(Badge, through="Awarded", related_name="guilds")


class Awarded(Plain):
    badge = models.ForeignKey(Badge, models.CASCADE, to_field="number")
    guild = models.ForeignKey(Guild, models.CASCADE)


class Seat(models.Model):
    """A ``CompositePrimaryKey`` (Django 5.2): the row tag is the text of the tuple."""

    pk = models.CompositePrimaryKey("hall", "number")
    hall = models.CharField(max_length=20)
    number = models.IntegerField()
    holder = models.CharField(max_length=100, default="")

    def __str__(self) -> str:
        return f"{self.hall} {self.number}"


class Price(models.Model):
    """A ``DecimalField`` pk: ``1.5`` is stored and read back as ``1.50``."""

    amount = models.DecimalField(max_digits=6, decimal_places=2, primary_key=True)
    label = models.CharField(max_length=100, default="")

    def __str__(self) -> str:
        return str(self.amount)


class Reading(models.Model):
    """A ``DateTimeField`` pk: aware in Python, naive UTC text in SQLite's parameters."""

    taken_at = models.DateTimeField(primary_key=True)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return str(self.taken_at)


class Team(models.Model):
    name = models.CharField(max_length=20)

    def __str__(self) -> str:
        return self.name


class Player(models.Model):
    """Two many-to-many fields that share one through model (Django allows it)."""

    name = models.CharField(max_length=20)
    teams = models.ManyToManyField(
        Team,
        through="Roster",
        through_fields=("player", "team"),
        related_name="players",
    )
    sponsored = models.ManyToManyField(
        Team, through="Roster", through_fields=("sponsor", "team"), related_name="+"
    )

    def __str__(self) -> str:
        return self.name


class Roster(models.Model):
    player = models.ForeignKey(Player, models.CASCADE, related_name="+")
    sponsor = models.ForeignKey(Player, models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, models.CASCADE, related_name="+")

    def __str__(self) -> str:
        return f"{self.player_id} in {self.team_id} ({self.sponsor_id})"


#: Django 6.1's database-level ``on_delete`` (``None`` before): the database deletes
#: or nulls the referencing rows itself, with no SQL of Django's and no signal.
DB_CASCADE = getattr(models, "DB_CASCADE", None)
DB_SET_NULL = getattr(models, "DB_SET_NULL", None)

if DB_CASCADE is not None and DB_SET_NULL is not None:

    class Shelf(models.Model):
        name = models.CharField(max_length=20)

        def __str__(self) -> str:
            return self.name

    class Slot(models.Model):
        shelf = models.ForeignKey(Shelf, on_delete=DB_CASCADE, related_name="slots")
        label = models.CharField(max_length=20)

        def __str__(self) -> str:
            return self.label

    class Pin(models.Model):
        """Two database cascades away from a ``Shelf``."""

        slot = models.ForeignKey(Slot, on_delete=DB_CASCADE, related_name="pins")

        def __str__(self) -> str:
            return f"pin of {self.slot_id}"

    class Sticker(models.Model):
        shelf = models.ForeignKey(
            Shelf, null=True, on_delete=DB_SET_NULL, related_name="stickers"
        )

        def __str__(self) -> str:
            return f"sticker on {self.shelf_id}"
