"""Order intents to request specs: filters enforced, and the strings sent are the strings signed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms.core.events import OrderSubmitted
from oms.core.state import Market
from oms.core.values import MarketType, OrderType, Side, Source, TimeInForce
from oms_backpack import endpoints
from oms_backpack.endpoints import InvalidOrder
from oms_backpack.signing import Credentials, signing_string

SOL = Market(
    symbol="SOL_USDC", base_asset="SOL", quote_asset="USDC", market_type=MarketType.SPOT,
    tick_size=Decimal("0.01"), step_size=Decimal("0.01"), min_quantity=Decimal("0.01"),
)  # fmt: skip
PERP = Market(
    symbol="SOL_USDC_PERP", base_asset="SOL", quote_asset="USDC", market_type=MarketType.PERP,
    tick_size=Decimal("0.05"), step_size=Decimal("0.1"), min_quantity=Decimal("0.1"),
)  # fmt: skip


def submit(**fields: object) -> OrderSubmitted:
    base: dict[str, object] = {
        "source": Source.LOCAL, "recv_time_us": 1, "client_id": 123, "symbol": "SOL_USDC",
        "side": Side.BID, "order_type": OrderType.LIMIT_MAKER, "quantity": Decimal("10"),
        "price": Decimal("100.50"), "time_in_force": TimeInForce.GTC,
    }  # fmt: skip
    base.update(fields)
    return OrderSubmitted(**base)  # type: ignore[arg-type]


def test_post_only_limit_matches_the_published_signing_vector() -> None:
    spec = endpoints.execute_order(submit(), SOL)
    assert (spec.method, spec.path, spec.instruction) == ("POST", "/api/v1/order", "orderExecute")
    assert spec.body == {
        "symbol": "SOL_USDC", "side": "Bid", "clientId": 123, "quantity": "10",
        "orderType": "Limit", "price": "100.5", "postOnly": True, "timeInForce": "GTC",
    }  # fmt: skip
    message = signing_string("orderExecute", spec.signed_params, 1614550000000)
    secret = "sKmC5939f6W9/viyhwyaNHa0f7j5wSMvZsysW5BB9L4="
    assert Credentials(secret).sign(message) == (
        "TTn5ry/LF0isjvZYrlnUFdoawI3IaQEw65Vxm7I13/tCF/GgaPD5iEPECbDbbTcQCiYubusd1lJ3adVhfTG7AQ=="
    )


def test_market_orders_by_quantity_or_by_quote_quantity() -> None:
    by_quantity = endpoints.execute_order(
        submit(order_type=OrderType.MARKET, price=None, time_in_force=None), SOL
    )
    assert by_quantity.body == {
        "symbol": "SOL_USDC", "side": "Bid", "clientId": 123, "quantity": "10",
        "orderType": "Market",
    }  # fmt: skip
    by_cost = endpoints.execute_order(
        submit(order_type=OrderType.MARKET, price=None, quantity=None,
               quote_quantity=Decimal("5.00"), side=Side.ASK, time_in_force=None),
        SOL,
    )  # fmt: skip
    assert by_cost.body == {
        "symbol": "SOL_USDC", "side": "Ask", "clientId": 123, "orderType": "Market",
        "quoteQuantity": "5",
    }  # fmt: skip


def test_reduce_only_on_perps_and_tick_multiples_that_are_not_powers_of_ten() -> None:
    spec = endpoints.execute_order(
        submit(symbol="SOL_USDC_PERP", order_type=OrderType.LIMIT, price=Decimal("141.15"),
               quantity=Decimal("1.2"), reduce_only=True, side=Side.ASK),
        PERP,
    )  # fmt: skip
    assert isinstance(spec.body, dict)
    assert spec.body["reduceOnly"] is True
    assert spec.body["price"] == "141.15"
    assert "postOnly" not in spec.body


@pytest.mark.parametrize(
    ("fields", "market", "message"),
    [
        ({"price": Decimal("100.505")}, SOL, "not a multiple"),
        ({"quantity": Decimal("10.001")}, SOL, "not a multiple"),
        ({"quantity": Decimal("0.001")}, SOL, "below"),
        ({"quantity": Decimal("-1")}, SOL, "positive"),
        ({"price": None}, SOL, "price"),
        ({"price": Decimal("141.12"), "symbol": "SOL_USDC_PERP"}, PERP, "not a multiple"),
        ({"reduce_only": True}, SOL, "reduce-only"),
        ({"client_id": 2**32}, SOL, "uint32"),
        (
            {"order_type": OrderType.MARKET, "price": None, "quote_quantity": Decimal(5)},
            SOL,
            "exactly one",
        ),
        ({"order_type": OrderType.MARKET}, SOL, "no price"),
        ({"symbol": "ETH_USDC"}, SOL, "market SOL_USDC given"),
        ({"quantity": Decimal("1E+50")}, SOL, "out of range"),
    ],
)
def test_what_the_market_cannot_represent_is_refused(
    fields: dict[str, object], market: Market, message: str
) -> None:
    with pytest.raises(InvalidOrder, match=message):
        endpoints.execute_order(submit(**fields), market)


def test_batch_signs_each_order_with_the_instruction() -> None:
    spec = endpoints.execute_batch(
        [(submit(client_id=1), SOL), (submit(client_id=2, price=Decimal("99")), SOL)]
    )
    assert isinstance(spec.body, list) and len(spec.body) == 2
    message = signing_string("orderExecute", spec.signed_params, 1)
    assert message.count("instruction=orderExecute") == 2
    assert "&clientId=1&" in message and "&clientId=2&" in message


def test_cancel_and_queries_name_the_order_one_way() -> None:
    assert endpoints.cancel_order("SOL_USDC", client_id=7).body == {
        "symbol": "SOL_USDC",
        "clientId": 7,
    }
    assert endpoints.cancel_order("SOL_USDC", venue_id="28").body == {
        "symbol": "SOL_USDC",
        "orderId": "28",
    }
    with pytest.raises(ValueError, match="exactly one"):
        endpoints.cancel_order("SOL_USDC")
    with pytest.raises(ValueError, match="exactly one"):
        endpoints.order_query("SOL_USDC", client_id=1, venue_id="2")
    fills = endpoints.fill_history(symbol="SOL_USDC", from_ms=1000)
    assert fills.query == {
        "symbol": "SOL_USDC",
        "from": 1000,
        "limit": 1000,
        "offset": 0,
        "sortDirection": "Asc",
    }
    assert endpoints.capital().instruction == "balanceQuery"
    assert endpoints.markets().instruction is None


def test_decimals_are_written_without_exponents() -> None:
    assert endpoints.format_decimal(Decimal("1E-7")) == "0.0000001"
    assert endpoints.format_decimal(Decimal("1.2300")) == "1.23"
    assert endpoints.format_decimal(Decimal("1E+3")) == "1000"
    assert endpoints.format_decimal(Decimal("0.000")) == "0"


def test_a_trigger_order_sends_its_trigger_instead_of_a_quantity() -> None:
    # As ccxt sends a trigger limit order (fact sheet §2.4), with our client id.
    spec = endpoints.execute_order(
        submit(
            symbol="SOL_USDC_PERP",
            order_type=OrderType.LIMIT,
            quantity=None,
            price=Decimal("140.00"),
            time_in_force=None,
            trigger_price=Decimal("141.10"),
            trigger_quantity="0.30",
        ),
        PERP,
    )
    assert spec.body == {
        "symbol": "SOL_USDC_PERP", "side": "Bid", "clientId": 123, "orderType": "Limit",
        "price": "140", "triggerPrice": "141.1", "triggerQuantity": "0.3",
    }  # fmt: skip
    share = endpoints.execute_order(
        submit(
            symbol="SOL_USDC_PERP",
            order_type=OrderType.MARKET,
            quantity=None,
            price=None,
            time_in_force=None,
            side=Side.ASK,
            reduce_only=True,
            trigger_price=Decimal("120"),
            trigger_quantity="80.0%",
            trigger_by="MarkPrice",
        ),
        PERP,
    )
    assert share.body == {
        "symbol": "SOL_USDC_PERP", "side": "Ask", "clientId": 123, "orderType": "Market",
        "reduceOnly": True, "triggerPrice": "120", "triggerQuantity": "80%",
        "triggerBy": "MarkPrice",
    }  # fmt: skip


def test_attached_exits_are_sent_as_the_venue_names_them() -> None:
    spec = endpoints.execute_order(
        submit(
            symbol="SOL_USDC_PERP",
            order_type=OrderType.MARKET,
            quantity=Decimal(4),
            price=None,
            time_in_force=None,
            stop_loss_trigger_price=Decimal("90"),
            take_profit_trigger_price=Decimal("200"),
            take_profit_limit_price=Decimal("199.95"),
            take_profit_trigger_by="LastPrice",
        ),
        PERP,
    )
    assert spec.body == {
        "symbol": "SOL_USDC_PERP", "side": "Bid", "clientId": 123, "quantity": "4",
        "orderType": "Market", "stopLossTriggerPrice": "90", "takeProfitTriggerPrice": "200",
        "takeProfitLimitPrice": "199.95", "takeProfitTriggerBy": "LastPrice",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trigger_price": Decimal(150)}, "both a trigger price and a trigger quantity"),
        ({"trigger_price": Decimal(150), "trigger_quantity": "1"}, "not a quantity"),
        (
            {"quantity": None, "trigger_price": Decimal("150.01"), "trigger_quantity": "1"},
            "multiple of",
        ),
        (
            {"quantity": None, "trigger_price": Decimal(150), "trigger_quantity": "101%"},
            "more than 100%",
        ),
        (
            {"quantity": None, "trigger_price": Decimal(150), "trigger_quantity": "0.05"},
            "below",
        ),
        (
            {"quantity": None, "trigger_price": Decimal(150), "trigger_quantity": "lots"},
            "not a quantity or a percentage",
        ),
        (
            {
                "quantity": None,
                "trigger_price": Decimal(150),
                "trigger_quantity": "1",
                "trigger_by": "Midpoint",
            },
            "not one of",
        ),
        ({"stop_loss_limit_price": Decimal(90)}, "needs a trigger price"),
        ({"symbol": "SOL_USDC", "take_profit_trigger_price": Decimal(200)}, "perpetual"),
    ],
)
def test_trigger_and_exit_mistakes_are_refused_before_sending(
    fields: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {"symbol": "SOL_USDC_PERP", "order_type": OrderType.LIMIT}
    base.update(fields)
    market = SOL if base["symbol"] == "SOL_USDC" else PERP
    with pytest.raises(InvalidOrder, match=message):
        endpoints.execute_order(submit(**base), market)
