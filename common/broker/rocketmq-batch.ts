/**
 * Batched acks to the RocketMQ 5 proxy, which its gRPC protocol allows but the Node client does
 * not expose: one AckMessageRequest acknowledging many received messages. The client's own
 * `ack` builds the same request with one entry; this builds it with many, over the client's
 * own connection (its rpcClientManager), and checks the answer the same way.
 *
 * (Sends are not batched: the 5.3 proxy gives every message of a multi-message
 * SendMessageRequest the keys and user properties of the first.)
 *
 * It reaches into rocketmq-client-nodejs 1.0.8 (pinned in package.json) through its generated
 * protobuf classes and a member that TypeScript marks protected; the broker conformance suite
 * runs it against a real proxy.
 */
import { createRequire } from 'node:module';
import { StatusChecker, type MessageView, type SimpleConsumer } from 'rocketmq-client-nodejs';
import type * as definitionPb from 'rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js';
import type * as servicePb from 'rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js';

// The generated protobuf modules attach their classes in a way Node's ESM loader cannot see
// as named exports: load them with require.
const require = createRequire(import.meta.url);
const { AckMessageRequest } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js') as typeof servicePb;
const { Resource } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js') as typeof definitionPb;

/** The part of a consumer this module uses; present on SimpleConsumer at run time. */
interface ConsumerInternals {
  rpcClientManager: {
    ackMessage(endpoints: MessageView['endpoints'], request: servicePb.AckMessageRequest, timeoutMs: number): Promise<servicePb.AckMessageResponse>;
  };
}

/** Acknowledges received messages of one consumer group in one request per topic and proxy. */
export async function ackMessages(consumer: SimpleConsumer, group: string, views: MessageView[], timeoutMs: number): Promise<void> {
  const internals = consumer as unknown as ConsumerInternals;
  const byTarget = new Map<string, MessageView[]>();
  for (const v of views) {
    const target = `${v.topic}\n${v.endpoints.facade}`;
    const list = byTarget.get(target);
    if (list) list.push(v);
    else byTarget.set(target, [v]);
  }
  await Promise.all(
    [...byTarget.values()].map(async (list) => {
      const first = list[0] as MessageView;
      const request = new AckMessageRequest().setGroup(new Resource().setName(group)).setTopic(new Resource().setName(first.topic));
      for (const v of list) request.addEntries().setMessageId(v.messageId).setReceiptHandle(v.receiptHandle);
      const response = await internals.rpcClientManager.ackMessage(first.endpoints, request, timeoutMs);
      StatusChecker.check(response.toObject().status);
    }),
  );
}
