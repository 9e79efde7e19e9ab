"""The order id reservation file (engine/order_ids.py): a new state starts past every generation used before,
a recovered one goes on, the mark stays a block ahead, and a damaged file refuses the start."""
import numpy as np
import pytest

from engine.order_ids import BLOCK, OrderIds, OrderIdsCorrupt
from kernels.arena import S_ORDER_GEN


def scalars(generation):
    s = np.zeros(S_ORDER_GEN + 1, np.int64)
    s[S_ORDER_GEN] = generation
    return s


def test_order_ids_when_no_file_then_new_state_starts_at_one_and_reserves_a_block(tmp_path):
    ids, s = OrderIds(tmp_path / "var" / "order-ids"), scalars(1)
    ids.start(s, new_state=True)
    assert s[S_ORDER_GEN] == 1 and ids.reserved == 1 + BLOCK
    assert (tmp_path / "var" / "order-ids").read_text() == f"{1 + BLOCK}\n"


def test_order_ids_when_new_state_after_a_run_then_it_starts_past_the_mark(tmp_path):
    path = tmp_path / "order-ids"
    first, s1 = OrderIds(path), scalars(1)
    first.start(s1, new_state=True)
    s1[S_ORDER_GEN] += 1000  # the run placed 1,000 orders, then stopped (or died)
    second, s2 = OrderIds(path), scalars(1)
    second.start(s2, new_state=True)
    assert s2[S_ORDER_GEN] == 1 + BLOCK > s1[S_ORDER_GEN]
    assert second.reserved == 1 + 2 * BLOCK


def test_order_ids_when_recovered_then_generation_goes_on_and_mark_follows(tmp_path):
    path = tmp_path / "order-ids"
    path.write_text(f"{5 * BLOCK}\n")
    ids, s = OrderIds(path), scalars(3 * BLOCK)  # as the journal left it: below the mark
    ids.start(s, new_state=False)
    assert s[S_ORDER_GEN] == 3 * BLOCK  # a recovered state is the journal's: replays must give the same ids
    assert ids.reserved == 4 * BLOCK


def test_order_ids_when_generation_nears_the_mark_then_maintain_moves_it_ahead(tmp_path):
    ids, s = OrderIds(tmp_path / "order-ids"), scalars(1)
    ids.start(s, new_state=True)
    s[S_ORDER_GEN] = BLOCK // 2  # still half a block below the mark: nothing written
    ids.maintain(s)
    assert ids.reserved == 1 + BLOCK
    s[S_ORDER_GEN] = BLOCK // 2 + 2
    ids.maintain(s)
    assert ids.reserved == BLOCK // 2 + 2 + BLOCK and OrderIds(ids.path).reserved == ids.reserved


@pytest.mark.parametrize("text", ["", "twelve\n", "-5\n", "1 2\n"])
def test_order_ids_when_file_damaged_then_start_is_refused_naming_it(tmp_path, text):
    path = tmp_path / "order-ids"
    path.write_text(text)
    with pytest.raises(OrderIdsCorrupt, match="order-ids: not an order id generation"):
        OrderIds(path)
