"""Messaging routes: messages, mailboxes, retention, channels, threads, history.

Every body, path value and query value is checked here (``validation``)
before PostOffice is asked anything; what it refuses (``MessageRefused``)
comes back as the JSON error it names. The sender of a message is always the
token's agent, whatever a body says in ``from``. A mailbox is read and
acknowledged only by its own agent or an admin (a viewer reads every mailbox
but acknowledges none); threads, channel histories and the message history
are read as a ``Reader``, so an ``agent`` token never sees other agents'
direct messages, nor the history of a channel it is not subscribed to.
"""

from __future__ import annotations

from agentcom.http.base import BaseHandler, HttpError
from agentcom.messages import Reader
from agentcom.store import READS_EVERY_TASK, TokenInfo
from agentcom.validation import (
    CHANNEL_CREATION,
    CHANNEL_POST,
    MAILBOX_ACK,
    MAX_PAYLOAD_BYTES,
    MESSAGE,
    PAYLOAD_TOO_LARGE,
    RETENTION,
    Invalid,
    channel_history_query,
    channel_name,
    history_query,
    letter,
    mailbox_query,
    retention_change,
)


class MessagingHandler(BaseHandler):
    """A ``BaseHandler`` whose checks raise ``Invalid`` and get its 400 (or 413)."""

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, Invalid):
            if e.code == PAYLOAD_TOO_LARGE:
                e = HttpError(413, str(e), limit_bytes=MAX_PAYLOAD_BYTES)
            else:
                e = HttpError(400, str(e))
        super()._handle_request_exception(e)


def _reader(caller: TokenInfo) -> Reader:
    return Reader(caller.agent_id, sees_all=caller.role in READS_EVERY_TASK)


def _mailbox_owner_or_admin(caller: TokenInfo, agent_id: str, *, reading: bool) -> None:
    """Only the mailbox's agent or an admin; a viewer only reads (it never gets this far
    on a write: ``authenticate`` refuses it first)."""
    if caller.agent_id == agent_id or caller.role == "admin":
        return
    if reading and caller.role in READS_EVERY_TASK:
        return
    raise HttpError(403, "forbidden")


# --- messages and mailboxes --------------------------------------------------------------


class MessageHandler(MessagingHandler):
    async def post(self) -> None:
        sender = await self.authenticate()
        sent_letter = letter(self.json_body(MESSAGE), sender.agent_id)
        known = await self.services.token_check.agent_ids(sent_letter.to)
        sent = await self.ask(self.services.post_office.send(sent_letter, known))
        self.send_json({"status": "sent", "id": sent["id"]})


class MailboxHandler(MessagingHandler):
    async def get(self, agent_id: str) -> None:
        caller = await self.authenticate()
        _mailbox_owner_or_admin(caller, agent_id, reading=True)
        since, limit = mailbox_query(self.request.query_arguments)
        self.send_json(await self.ask(self.services.post_office.mailbox(agent_id, since, limit)))


class MailboxAckHandler(MessagingHandler):
    async def post(self, agent_id: str) -> None:
        caller = await self.authenticate()
        _mailbox_owner_or_admin(caller, agent_id, reading=False)
        seq = self.json_body(MAILBOX_ACK)["seq"]
        acked = await self.ask(self.services.post_office.ack(agent_id, seq))
        self.send_json({"status": "acked", "up_to": acked["up_to"]})


class RetentionHandler(MessagingHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json(await self.ask(self.services.post_office.retention()))

    async def put(self) -> None:
        await self.authenticate(admin=True)
        ttl_ms, most = retention_change(self.json_body(RETENTION))
        retention = await self.ask(self.services.post_office.set_retention(ttl_ms, most))
        self.send_json({**retention, "status": "updated"})


# --- channels ------------------------------------------------------------------------------


class ChannelsHandler(MessagingHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json({"channels": await self.ask(self.services.post_office.list_channels())})

    async def post(self) -> None:
        creator = await self.authenticate()
        body = self.json_body(CHANNEL_CREATION)
        name = channel_name(body["name"])
        await self.ask(
            self.services.post_office.create_channel(
                name, body.get("description"), creator.agent_id
            )
        )
        self.send_json({"status": "created", "channel": name}, 201)


class ChannelHandler(MessagingHandler):
    async def get(self, raw_name: str) -> None:
        await self.authenticate()
        name = channel_name(raw_name)
        self.send_json(await self.ask(self.services.post_office.channel(name)))

    async def delete(self, raw_name: str) -> None:
        caller = await self.authenticate()
        name = channel_name(raw_name)
        await self.ask(self.services.post_office.delete_channel(name, _reader(caller)))
        self.send_json({"status": "deleted", "channel": name})


class ChannelSubscribeHandler(MessagingHandler):
    async def post(self, raw_name: str) -> None:
        agent = await self.authenticate()
        name = channel_name(raw_name)
        status = await self.ask(self.services.post_office.subscribe(name, agent.agent_id))
        self.send_json({"status": status, "channel": name})


class ChannelUnsubscribeHandler(MessagingHandler):
    async def post(self, raw_name: str) -> None:
        agent = await self.authenticate()
        name = channel_name(raw_name)
        status = await self.ask(self.services.post_office.unsubscribe(name, agent.agent_id))
        self.send_json({"status": status, "channel": name})


class ChannelPublishHandler(MessagingHandler):
    async def post(self, raw_name: str) -> None:
        publisher = await self.authenticate()
        name = channel_name(raw_name)
        published_letter = letter(self.json_body(CHANNEL_POST), publisher.agent_id)
        published = await self.ask(self.services.post_office.publish(name, published_letter))
        self.send_json({"status": "published", **published})


class ChannelHistoryHandler(MessagingHandler):
    async def get(self, raw_name: str) -> None:
        reader = _reader(await self.authenticate())
        name = channel_name(raw_name)
        since, limit = channel_history_query(self.request.query_arguments)
        self.send_json(
            await self.ask(self.services.post_office.channel_history(name, since, limit, reader))
        )


class SubscriptionsHandler(MessagingHandler):
    async def get(self, agent_id: str) -> None:
        await self.authenticate()
        channels = await self.ask(self.services.post_office.subscriptions(agent_id))
        self.send_json({"agent_id": agent_id, "channels": channels})


# --- threads and history -------------------------------------------------------------------


class ThreadHandler(MessagingHandler):
    async def get(self, message_id: str) -> None:
        reader = _reader(await self.authenticate())
        self.send_json(await self.ask(self.services.post_office.thread(message_id, reader)))


class ThreadRepliesHandler(MessagingHandler):
    async def get(self, message_id: str) -> None:
        reader = _reader(await self.authenticate())
        self.send_json(await self.ask(self.services.post_office.replies(message_id, reader)))


class ThreadRootHandler(MessagingHandler):
    async def get(self, message_id: str) -> None:
        reader = _reader(await self.authenticate())
        self.send_json(await self.ask(self.services.post_office.root(message_id, reader)))


class MessagesHandler(MessagingHandler):
    async def get(self) -> None:
        reader = _reader(await self.authenticate())
        query = history_query(self.request.query_arguments)
        page = await self.ask(
            self.services.post_office.history(
                reader,
                query.sender,
                query.to,
                query.channel,
                query.since,
                query.until,
                query.cursor,
                query.limit,
            )
        )
        self.send_json(page)
