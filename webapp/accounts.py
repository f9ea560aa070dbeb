"""Users, API tokens and pulse meters open to anonymous reads, in Cassandra (infra/cql/005_users.cql),
and the `flask --app webapp users ...` commands that manage them.

Passwords are stored as argon2id hashes; an API token is 32 random bytes (urlsafe base64),
shown once and stored only as its SHA-256.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import click
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cassandra import DriverException, InvalidRequest, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from flask import current_app
from flask.cli import AppGroup

from smw import cql
from webapp import params
from webapp.db import CassandraStore, cassandra
from webapp.errors import BadParameter

ROLES = ("admin", "household")
EVERYONE = ("0.0.0.0/0", "::/0")
TOKEN_BYTES = 32
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
MAX_USERS_LISTED = 10000
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, 64 MiB, p=4)
# Verified against when the user does not exist, so a wrong name costs what a wrong password does.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    """Who a request acts for (`flask.g.user`); None there means anonymous."""

    username: str
    role: str
    houses: frozenset[str]
    email: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AccountError(ValueError):
    """A user's mistake in an account command; the message says what to do."""


def username(text: str) -> str:
    if not text or not _USERNAME.fullmatch(text):
        raise AccountError(f"user name {text!r}: 1-64 letters, digits or _.@- (starting with a letter or digit)")
    return text


def house_ids(names) -> frozenset[str]:
    try:
        return frozenset(params.name("house id", name) for name in names)
    except BadParameter as exc:
        raise AccountError(str(exc)) from None


def hash_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError(f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    return _hasher.hash(password)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _user(row) -> User:
    return User(row.username, row.role, frozenset(row.houses or ()), row.email)


USER_QUERY = "SELECT username, password_hash, role, houses, email, created FROM users WHERE username = ?"


def get_user(store: CassandraStore, name: str) -> User | None:
    rows = store.rows(USER_QUERY, (name,))
    return _user(rows[0]) if rows and rows[0].role in ROLES else None


def check_password(store: CassandraStore, name: str, password: str) -> User | None:
    """The user if the password is theirs, else None (the same argon2 work either way)."""
    rows = store.rows(USER_QUERY, (name,)) if _USERNAME.fullmatch(name or "") else []
    row = rows[0] if rows else None
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row.password_hash or row.role not in ROLES:
        return None
    if _hasher.check_needs_rehash(stored):  # the hasher's parameters were raised since
        store.rows("UPDATE users SET password_hash = ? WHERE username = ?", (_hasher.hash(password), name))
    return _user(row)


def create_user(store: CassandraStore, name: str, role: str, houses: frozenset[str], email: str | None,
                password_hash: str | None) -> bool:
    """Add a user; False when the name is taken."""
    rows = store.rows("INSERT INTO users (username, password_hash, role, houses, email, created) "
                      "VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                      (name, password_hash, role, set(houses), email, _now()))
    return bool(rows[0][0])


def set_password(store: CassandraStore, name: str, password_hash: str) -> bool:
    rows = store.rows("UPDATE users SET password_hash = ? WHERE username = ? IF EXISTS", (password_hash, name))
    return bool(rows[0][0])


def change_houses(store: CassandraStore, name: str, houses: frozenset[str], grant: bool) -> bool:
    """Grant (or revoke) houses; False when there is no such user."""
    op = "+" if grant else "-"
    rows = store.rows(f"UPDATE users SET houses = houses {op} ? WHERE username = ? IF EXISTS", (set(houses), name))
    return bool(rows[0][0])


def tokens_of(store: CassandraStore, name: str) -> list:
    return store.rows("SELECT name, token_sha256, created FROM api_tokens_by_user WHERE username = ?", (name,))


def new_token(store: CassandraStore, name: str, label: str) -> str | None:
    """A fresh token for the user, labelled `label` (unique per user); None when the label is taken."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    digest, now = token_digest(token), _now()
    rows = store.rows("INSERT INTO api_tokens_by_user (username, name, token_sha256, created) VALUES (?, ?, ?, ?) "
                      "IF NOT EXISTS", (name, label, digest, now))
    if not rows[0][0]:
        return None
    store.rows("INSERT INTO api_tokens (token_sha256, username, name, created) VALUES (?, ?, ?, ?)",
               (digest, name, label, now))
    return token


def revoke_token(store: CassandraStore, name: str, label: str) -> bool:
    rows = store.rows("SELECT token_sha256 FROM api_tokens_by_user WHERE username = ? AND name = ?", (name, label))
    if not rows:
        return False
    store.rows("DELETE FROM api_tokens WHERE token_sha256 = ?", (rows[0].token_sha256,))
    store.rows("DELETE FROM api_tokens_by_user WHERE username = ? AND name = ?", (name, label))
    return True


def token_user(store: CassandraStore, digest: str) -> User | None:
    """The user of a token (by its SHA-256), None for an unknown token or a user that is gone."""
    rows = store.rows("SELECT username FROM api_tokens WHERE token_sha256 = ?", (digest,))
    if not rows:
        return None
    store.start("UPDATE api_tokens SET last_used = ? WHERE token_sha256 = ?", (_now(), digest))  # not awaited
    return get_user(store, rows[0].username)


def delete_user(store: CassandraStore, name: str) -> bool:
    if not store.rows(USER_QUERY, (name,)):
        return False
    for token in tokens_of(store, name):
        store.rows("DELETE FROM api_tokens WHERE token_sha256 = ?", (token.token_sha256,))
    store.rows("DELETE FROM api_tokens_by_user WHERE username = ?", (name,))
    store.rows("DELETE FROM users WHERE username = ?", (name,))
    return True


def networks(texts) -> frozenset[str]:
    """CIDR networks, normalised (host bits cleared)."""
    try:
        return frozenset(str(ipaddress.ip_network(text.strip(), strict=False)) for text in texts)
    except ValueError as exc:
        raise AccountError(f"{exc}: give networks as CIDR, e.g. 192.168.1.0/24 or 0.0.0.0/0") from None


def open_meter(store: CassandraStore, meter_id: str, cidrs: frozenset[str]) -> None:
    store.rows("INSERT INTO open_meters (meter_id, networks, opened) VALUES (?, ?, ?)", (meter_id, set(cidrs), _now()))


def close_meter(store: CassandraStore, meter_id: str) -> bool:
    rows = store.rows("DELETE FROM open_meters WHERE meter_id = ? IF EXISTS", (meter_id,))
    return bool(rows[0][0])


def meter_networks(store: CassandraStore, meter_id: str) -> tuple:
    """The networks a meter is open to (ip_network objects); () when it is closed."""
    rows = store.rows("SELECT networks FROM open_meters WHERE meter_id = ?", (meter_id,))
    return tuple(ipaddress.ip_network(text) for text in (rows[0].networks or ())) if rows else ()


# ---------------------------------------------------------------------------- commands

users_cli = AppGroup("users", help="Manage the web app's users, API tokens and open pulse meters.")


def command(name: str, **kwargs):
    """A `users` subcommand whose failures are one line on stderr and exit status 1, never a traceback."""
    def register(function):
        @functools.wraps(function)
        def run(*args, **kw):
            try:
                return function(*args, **kw)
            except AccountError as exc:
                raise click.ClickException(str(exc)) from None
            except cql.Unavailable as exc:
                raise click.ClickException(str(exc)) from None
            except InvalidRequest as exc:
                raise click.ClickException(f"Cassandra refused the request ({exc}); are the tables there "
                                           "(make init)?") from None
            except (NoHostAvailable, RequestExecutionException, DriverException) as exc:
                raise click.ClickException(f"Cassandra did not answer ({type(exc).__name__}); try again "
                                           "(make status)") from None
        return users_cli.command(name, **kwargs)(run)
    return register


def existing(store: CassandraStore, name: str) -> User:
    found = get_user(store, username(name))
    if found is None:
        raise AccountError(f"no user {name!r} (flask --app webapp users list)")
    return found


def read_password_file(path: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AccountError(f"cannot read the password file: {exc.strerror} ({path})") from None
    if not lines:
        raise AccountError(f"the password file {path} is empty")
    return lines[0]


@command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="household", show_default=True,
              help="admin: every house and the cross-house pages; household: the granted houses")
@click.option("--house", "houses", multiple=True, metavar="HOUSE", help="a house to grant (repeat for more)")
@click.option("--email", default=None, help="the user's e-mail address")
@click.option("--password-file", default=None, metavar="PATH", help="read the password from the first line of PATH")
@click.option("--generate-password", is_flag=True, help="generate a password and print it once")
@click.option("--no-password", is_flag=True, help="no password: the user signs in with API tokens only")
def create(name, role, houses, email, password_file, generate_password, no_password):
    """Create user NAME; the password is asked for unless given another way."""
    name = username(name)
    granted = house_ids(houses)
    if role == "admin" and granted:
        raise AccountError("an admin sees every house; --house is for household users")
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise AccountError(f"{email!r} is not an e-mail address")
    if sum(map(bool, (password_file, generate_password, no_password))) > 1:
        raise AccountError("give at most one of --password-file, --generate-password and --no-password")
    store = cassandra()
    if get_user(store, name) is not None:
        raise AccountError(f"user {name!r} exists; delete it first or use grant/revoke")
    password = None
    if password_file:
        password = read_password_file(password_file)
    elif generate_password:
        password = secrets.token_urlsafe(12)
    elif not no_password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    hashed = hash_password(password) if password is not None else None
    if not create_user(store, name, role, granted, email, hashed):
        raise AccountError(f"user {name!r} exists")
    click.echo(f"created {role} {name}" + (f" with houses {', '.join(sorted(granted))}" if granted else ""), err=True)
    if generate_password:
        click.echo(f"password (shown once): {password}")


@command("grant")
@click.argument("name")
@click.argument("houses", nargs=-1, required=True)
def grant(name, houses):
    """Let household user NAME see HOUSES."""
    user = existing(cassandra(), name)
    granted = house_ids(houses)
    if user.is_admin:
        raise AccountError(f"{name} is an admin and sees every house already")
    store = cassandra()
    change_houses(store, user.username, granted, grant=True)
    from webapp import queries
    for house in sorted(granted):
        if queries.house(store, house) is None:
            click.echo(f"note: no house {house} is registered yet (granted anyway)", err=True)
    click.echo(f"{name}: houses {', '.join(sorted(user.houses | granted))}")


@command("revoke")
@click.argument("name")
@click.argument("houses", nargs=-1, required=True)
def revoke(name, houses):
    """Take HOUSES away from user NAME."""
    user = existing(cassandra(), name)
    taken = house_ids(houses)
    change_houses(cassandra(), user.username, taken, grant=False)
    left = user.houses - taken
    click.echo(f"{name}: houses {', '.join(sorted(left)) or '(none)'}")


@command("token")
@click.argument("name")
@click.option("--name", "label", default="default", show_default=True, help="a label for the token, unique per user")
def token(name, label):
    """Make an API token for user NAME and print it once (send it as Authorization: Bearer <token>)."""
    user = existing(cassandra(), name)
    label = params_label(label)
    made = new_token(cassandra(), user.username, label)
    if made is None:
        raise AccountError(f"{name} has a token labelled {label!r}; pick another --name or revoke-token it first")
    click.echo(f"token {label!r} for {name} (shown once; only its SHA-256 is stored):", err=True)
    click.echo(made)


def params_label(label: str) -> str:
    try:
        return params.name("token label", label)
    except BadParameter as exc:
        raise AccountError(str(exc)) from None


@command("revoke-token")
@click.argument("name")
@click.argument("labels", nargs=-1)
@click.option("--all", "every", is_flag=True, help="revoke every token of the user")
def revoke_token_command(name, labels, every):
    """Revoke user NAME's tokens LABELS (or --all); servers stop accepting them within AUTH_CACHE_TTL_S."""
    user = existing(cassandra(), name)
    store = cassandra()
    if every == bool(labels):
        raise AccountError("name the token labels to revoke, or give --all")
    targets = [t.name for t in tokens_of(store, user.username)] if every else list(labels)
    for label in targets:
        if not revoke_token(store, user.username, label):
            raise AccountError(f"{name} has no token labelled {label!r} (flask --app webapp users list)")
        click.echo(f"revoked {name}'s token {label!r}")


@command("list")
def list_users():
    """List the users, their houses and token labels, and the open meters."""
    store = cassandra()
    rows = store.rows("SELECT username, role, houses, email, created, password_hash FROM users LIMIT ?",
                      (MAX_USERS_LISTED,))
    if not rows:
        click.echo("no users yet: flask --app webapp users create NAME --role admin")
    for row in sorted(rows, key=lambda r: r.username):
        tokens = ", ".join(sorted(t.name for t in tokens_of(store, row.username))) or "-"
        houses = "(all)" if row.role == "admin" else (", ".join(sorted(row.houses or ())) or "(none)")
        click.echo(f"{row.username}\t{row.role}\t{row.email or '-'}\thouses: {houses}\ttokens: {tokens}"
                   + ("" if row.password_hash else "\t(no password)"))
    for meter in store.rows("SELECT meter_id, networks FROM open_meters LIMIT ?", (MAX_USERS_LISTED,)):
        click.echo(f"open meter {meter.meter_id}\tfrom {', '.join(sorted(meter.networks or ()))}")


@command("delete")
@click.argument("name")
def delete(name):
    """Delete user NAME and its tokens (servers forget them within AUTH_CACHE_TTL_S)."""
    if not delete_user(cassandra(), username(name)):
        raise AccountError(f"no user {name!r} (flask --app webapp users list)")
    click.echo(f"deleted {name}")


def meter_argument(text: str) -> str:
    try:
        found = params.name("meter id", text)
    except BadParameter as exc:
        raise AccountError(str(exc)) from None
    return current_app.config["PULSE_METER_ALIASES"].get(found, found)


@command("open-meter")
@click.argument("meter")
@click.option("--from", "cidrs", multiple=True, metavar="CIDR",
              help="a network allowed to read without credentials (repeat; default everyone: 0.0.0.0/0 and ::/0)")
def open_meter_command(meter, cidrs):
    """Let clients read pulse meter METER (an id or a PULSE_METER_ALIASES alias) without credentials."""
    meter_id = meter_argument(meter)
    allowed = networks(cidrs or EVERYONE)
    open_meter(cassandra(), meter_id, allowed)
    click.echo(f"meter {meter_id} open to {', '.join(sorted(allowed))} (servers see it within AUTH_CACHE_TTL_S)")


@command("close-meter")
@click.argument("meter")
def close_meter_command(meter):
    """Close pulse meter METER to anonymous reads again."""
    meter_id = meter_argument(meter)
    if not close_meter(cassandra(), meter_id):
        click.echo(f"meter {meter_id} was not open", err=True)
        return
    click.echo(f"meter {meter_id} closed (servers see it within AUTH_CACHE_TTL_S)")


def init_app(app) -> None:
    app.cli.add_command(users_cli)

