"""The delivery task. It only names a message: the Message row says what to do (services)."""
from mailservice.compat import task


@task()
def deliver_message(message_id: str) -> str | None:
    """Claim the message, send it through the failover backend, and record what happened."""
    from mailservice.services import message_deliver

    message = message_deliver(message_id=message_id)
    return message.status if message is not None else None
