"""``valid_by_construction()`` seen by torch.compile: the plain flag it reads while tracing
is False again once every thread has left, whatever the order they leave in."""

import threading

from metaloop.tasks import batch as batch_mod
from metaloop.tasks.batch import valid_by_construction, values_trusted


def test_threads_leaving_out_of_order_leave_the_tracing_flag_off():
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with valid_by_construction():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with valid_by_construction():
            b_in.set()
            a_out.wait(5)
            assert batch_mod._TRUSTED_WHILE_TRACING[0]   # B is still inside

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start(), tb.start()
    ta.join(10), tb.join(10)
    assert a_out.is_set() and b_in.is_set()
    assert batch_mod._TRUSTED_WHILE_TRACING == [False]     # A in, B in, A out, B out
    assert not values_trusted()


def test_nested_scopes_in_one_thread():
    with valid_by_construction():
        with valid_by_construction():
            assert values_trusted() and batch_mod._TRUSTED_WHILE_TRACING[0]
        assert values_trusted() and batch_mod._TRUSTED_WHILE_TRACING[0]
    assert not values_trusted() and batch_mod._TRUSTED_WHILE_TRACING == [False]
