"""The proof of concept's send URL: `GET /?to=addr[&subject=&text=]` and `POST /` (form or JSON,
the API's fields). Same path, same API key, same answers and errors as POST /api/messages."""

from __future__ import annotations

from typing import Any

import pydantic
from django.http import HttpRequest, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from mailservice import conf
from mailservice.api.auth import authenticate_request
from mailservice.api.errors import is_too_big, pydantic_errors, rejected_response, too_big_response
from mailservice.api.submit import accepted_response, submit_message
from mailservice.exceptions import FieldError, InvalidRequest, RequestRejected
from mailservice.message_fields import CONTENT, FIELDS, Param
from mailservice.schemas import MessageIn
from mailservice.validation import parse_json_body

# How each field is read from a query string or a form; an unknown name is taken once, and
# refused by MessageIn.
PARAMS = {field.name: field.param for field in FIELDS}


@csrf_exempt
@require_http_methods(["GET", "POST"])
def send(request: HttpRequest) -> JsonResponse:
    try:
        api_key = authenticate_request(request, "send")
        data = _read(request)
        try:
            payload = MessageIn.model_validate(data)
        except pydantic.ValidationError as err:
            raise InvalidRequest(pydantic_errors(err.errors())) from None
        message, replayed = submit_message(request=request, data=payload, api_key=api_key)
    except RequestRejected as err:
        return rejected_response(err)
    except Exception as err:
        if is_too_big(err):
            return too_big_response()
        # GatewayErrorsMiddleware answers the rest: 503 + Retry-After when the database or the
        # cache is out of reach (api/errors.py, unavailable_response), else a JSON 500.
        raise
    return accepted_response(request, message, replayed)


def _read(request: HttpRequest) -> dict[str, Any]:
    if request.method == "GET":
        data = _from_params(request.GET)
        # As in the proof of concept, `GET /?to=addr` alone sends a short test message. A
        # message with a template takes its subject from the template.
        if "template" not in data:
            data.setdefault("subject", conf.send_url_subject())
        if not any(data.get(name) for name in CONTENT):
            data["text"] = conf.send_url_text()
        return data
    if request.GET:
        raise InvalidRequest(
            [FieldError(name, "Send the parameters of a POST in its body.") for name in request.GET]
        )
    if request.content_type == "application/json":
        # Measured on its bytes before it is parsed, as the API's bodies are (api/parsing.py).
        data = parse_json_body(request.body or b"null")
        if not isinstance(data, dict):
            raise InvalidRequest([FieldError(None, "The request body must be a JSON object.")])
        return data
    return _from_params(request.POST)


def _from_params(params: QueryDict) -> dict[str, Any]:
    data: dict[str, Any] = {}
    errors = []
    for name in params:
        values = params.getlist(name)
        param = PARAMS.get(name, Param.ONE)
        if param is Param.JSON_ONLY:
            errors.append(FieldError(name, "This field is accepted only in a JSON body."))
        elif param is Param.LIST:
            data[name] = values
        elif len(values) > 1:
            errors.append(FieldError(name, "Give this parameter once."))
        else:
            data[name] = values[0]
    if errors:
        raise InvalidRequest(errors)
    return data
