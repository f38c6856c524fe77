"""HTTP routes for customers (`/customers`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from customer_metrics.api.deps import AppLimits, CurrentTenant, DbSession
from customer_metrics.api.openapi import CUSTOMER_REF, errors, links
from customer_metrics.api.pagination import Cursor, Limit, decode_int_cursor, encode_cursor
from customer_metrics.api.routing import StrictRoute
from customer_metrics.customers.repository import CustomerRepository, CustomerRow
from customer_metrics.customers.schemas import (
    CUSTOMER_ID_SCHEMA,
    CustomerCreate,
    CustomerOut,
    CustomerPage,
    CustomerReplace,
    CustomerUpdate,
)
from customer_metrics.customers.service import CustomerService
from customer_metrics.text import CleanStr

router = APIRouter(
    prefix="/customers",
    tags=["customers"],
    route_class=StrictRoute,
)


async def customer_service(
    session: DbSession, tenant: CurrentTenant, limits: AppLimits
) -> CustomerService:
    return CustomerService(CustomerRepository(session, tenant), limits)


Service = Annotated[CustomerService, Depends(customer_service)]
# What a customer id may be is checked by the service (a PUT or a write answers 422; a read of an
# id that cannot exist answers 404); the document says it.
CustomerIdPath = Annotated[str, Path(json_schema_extra=CUSTOMER_ID_SCHEMA)]


def to_out(row: CustomerRow) -> CustomerOut:
    return CustomerOut(
        id=row.id,
        customer_id=row.customer_id,
        name=row.name,
        email=row.email,
        organization_id=row.organization_id,
        time_created=row.time_created,
        time_updated=row.time_updated,
    )


def _location(row: CustomerRow) -> str:
    from urllib.parse import quote

    return f"/external/v1/customers/{quote(row.customer_id, safe='')}"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CustomerOut,
    responses={
        **links(
            201,
            CUSTOMER_REF,
            "get_customer",
            "put_customer",
            "update_customer",
            "delete_customer",
            "record_value",
            "get_current_values",
        ),
        **errors(409, 415),
    },
)
async def create_customer(
    body: CustomerCreate, service: Service, session: DbSession, response: Response
) -> CustomerOut:
    row = await service.create(body.customer_id, body.name, body.email)
    await session.commit()
    response.headers["Location"] = _location(row)
    return to_out(row)


@router.get("", response_model=CustomerPage)
async def list_customers(
    service: Service,
    limit: Limit = 50,
    cursor: Cursor = None,
    q: Annotated[CleanStr | None, Query(max_length=255)] = None,
) -> CustomerPage:
    after = decode_int_cursor(cursor)
    query = q.strip() if q and q.strip() else None
    rows = await service.list_page(query, after, limit + 1)
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return CustomerPage(data=[to_out(r) for r in rows[:limit]], next_cursor=next_cursor)


@router.get("/{customer_id}", response_model=CustomerOut, responses=errors(404))
async def get_customer(customer_id: CustomerIdPath, service: Service) -> CustomerOut:
    return to_out(await service.get(customer_id))


@router.put(
    "/{customer_id}",
    response_model=CustomerOut,
    responses={201: {"model": CustomerOut, "description": "Created"}, **errors(415)},
)
async def put_customer(
    customer_id: CustomerIdPath,
    body: CustomerReplace,
    service: Service,
    session: DbSession,
    response: Response,
) -> CustomerOut:
    row, created = await service.put(customer_id, body.name, body.email)
    await session.commit()
    if created:
        response.status_code = status.HTTP_201_CREATED
        response.headers["Location"] = _location(row)
    return to_out(row)


@router.patch("/{customer_id}", response_model=CustomerOut, responses=errors(404, 409, 415))
async def update_customer(
    customer_id: CustomerIdPath, body: CustomerUpdate, service: Service, session: DbSession
) -> CustomerOut:
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    row = await service.update(customer_id, changes)
    await session.commit()
    return to_out(row)


@router.delete("/{customer_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404, 409))
async def delete_customer(
    customer_id: CustomerIdPath, service: Service, session: DbSession
) -> Response:
    await service.delete(customer_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
