"""Ids cut from a shared pool of random base62 characters: never handed out twice, whatever the threads."""

from __future__ import annotations

import os
import re
import threading

from overnight import ids

_BASE62 = re.compile(r"[0-9A-Za-z]+")


def test_ids_have_their_prefix_and_24_base62_characters() -> None:
    for make, prefix in ((ids.batch_id, "msgbatch_"), (ids.message_id, "msg_"), (ids.request_id, "req_")):
        value = make()
        assert value.startswith(prefix) and len(value) == len(prefix) + 24
        assert _BASE62.fullmatch(value[len(prefix) :])


def test_many_ids_across_several_refills_are_all_distinct() -> None:
    made = [ids.message_id() for _ in range(20_000)]  # several 64 KiB draws
    assert len(set(made)) == len(made)


def test_threads_taking_at_once_never_get_the_same_id() -> None:
    taken: list[list[str]] = [[] for _ in range(8)]

    def take(into: list[str]) -> None:
        for _ in range(5_000):
            into.append(ids.request_id())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in taken for value in into]
    assert len(every) == 40_000 and len(set(every)) == 40_000


def test_a_forked_child_draws_its_own_ids() -> None:
    ids.message_id()  # the parent has a pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id and leave at once
        os.write(write, ids.message_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id != ids.message_id() and child_id.startswith("msg_")
