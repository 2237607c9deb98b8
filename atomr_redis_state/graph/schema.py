"""Channelled state: a schema of named channels, each with a reducer and a default.

:class:`RunState` is the state of one run between super-steps. It owns its values: everything
read out of it is a copy, and every write is copied in, so no caller can change the state except
through a reducer.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from ..errors import UnknownChannelError
from ..store.types import JSON
from ..store.validation import check_super_step
from .reducers import BuiltinReducer, LastWriteWins, Reducer


@dataclass(frozen=True, slots=True)
class Channel:
    """One named channel: writes go through ``reducer``; a new run starts at ``default``."""

    key: str
    reducer: Reducer
    default: JSON = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"a channel key must be a non-empty str, not {self.key!r}")
        if isinstance(self.reducer, type) and issubclass(self.reducer, BuiltinReducer):
            name = self.reducer.__name__
            raise TypeError(
                f"channel {self.key!r}: pass a reducer instance, {name}(), not the class"
            )
        if not callable(self.reducer):
            raise TypeError(f"channel {self.key!r}: the reducer must be callable")
        object.__setattr__(self, "default", copy.deepcopy(self.default))


class StateSchema:
    """The channels of a workflow's state, in declaration order."""

    __slots__ = ("_channels",)

    def __init__(self, channels: Iterable[Channel]) -> None:
        self._channels: dict[str, Channel] = {}
        for channel in channels:
            if not isinstance(channel, Channel):
                raise TypeError(f"expected a Channel, not {type(channel).__name__}")
            if channel.key in self._channels:
                raise ValueError(f"channel {channel.key!r} is declared twice")
            self._channels[channel.key] = channel

    @staticmethod
    def builder() -> StateSchemaBuilder:
        """Start declaring channels: ``StateSchema.builder().add(...).add_lww(...).build()``."""
        return StateSchemaBuilder()

    def channel(self, key: str) -> Channel | None:
        """The channel named ``key``, or None."""
        return self._channels.get(key)

    def keys(self) -> list[str]:
        """The channel names, in declaration order."""
        return list(self._channels)

    def defaults(self) -> dict[str, JSON]:
        """Every channel's default value: a fresh deep copy on each call."""
        return {key: copy.deepcopy(ch.default) for key, ch in self._channels.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._channels

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._channels.values())

    def __len__(self) -> int:
        return len(self._channels)

    def __repr__(self) -> str:
        return f"StateSchema({list(self._channels.values())!r})"


class StateSchemaBuilder:
    """Collects channels for :meth:`StateSchema.builder`; every method returns the builder."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: list[Channel] = []

    def add(self, key: str, reducer: Reducer, default: JSON = None) -> StateSchemaBuilder:
        """Declare channel ``key`` with ``reducer`` and ``default``."""
        self._channels.append(Channel(key, reducer, default))
        return self

    def add_lww(self, key: str, default: JSON = None) -> StateSchemaBuilder:
        """Declare a :class:`~.reducers.LastWriteWins` channel."""
        return self.add(key, LastWriteWins(), default)

    def build(self) -> StateSchema:
        """The schema; a channel declared twice is a ValueError."""
        return StateSchema(self._channels)


class RunState:
    """The values of a run's channels at one super-step.

    ``RunState(schema)`` is a new run: every channel at its default, super-step 0.
    """

    __slots__ = ("_schema", "_super_step", "_values")

    def __init__(self, schema: StateSchema) -> None:
        if not isinstance(schema, StateSchema):
            raise TypeError(f"expected a StateSchema, not {type(schema).__name__}")
        self._schema = schema
        self._values: dict[str, Any] = schema.defaults()
        self._super_step = 0

    @classmethod
    def from_snapshot(
        cls, schema: StateSchema, values: Mapping[str, object], super_step: int
    ) -> RunState:
        """The state saved in a snapshot: channels it lacks take their default; extra keys stay."""
        state = cls(schema)
        state._values.update(copy.deepcopy(dict(values)))
        state._super_step = check_super_step(super_step)
        return state

    @property
    def schema(self) -> StateSchema:
        return self._schema

    @property
    def super_step(self) -> int:
        """The super-step these values belong to."""
        return self._super_step

    def advance(self) -> int:
        """Move to the next super-step and return it."""
        self._super_step = check_super_step(self._super_step + 1)
        return self._super_step

    def read(self, key: str) -> JSON:
        """A copy of the value of ``key``; None when there is no such value."""
        return cast(JSON, copy.deepcopy(self._values.get(key)))

    def snapshot(self) -> dict[str, JSON]:
        """A copy of every value, which later writes cannot change."""
        return cast(dict[str, JSON], copy.deepcopy(self._values))

    def write(self, key: str, value: object) -> None:
        """Reduce ``value`` into channel ``key``; an unknown channel changes nothing."""
        self.merge_writes([(key, value)])

    def merge_writes(self, pairs: Iterable[tuple[str, object]]) -> None:
        """Apply ``(channel, value)`` writes in order, all or nothing.

        If any write names an unknown channel, or a reducer raises, the state is left exactly
        as it was and the error propagates.
        """
        staged: dict[str, Any] = {}
        for key, value in list(pairs):
            channel = self._schema.channel(key) if isinstance(key, str) else None
            if channel is None:
                raise UnknownChannelError(key, self._schema.keys())
            current = staged[key] if key in staged else self._values.get(key)
            staged[key] = channel.reducer(copy.deepcopy(current), copy.deepcopy(value))
        self._values.update(staged)

    def __repr__(self) -> str:
        return f"RunState(super_step={self._super_step}, values={self._values!r})"
