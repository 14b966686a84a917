/*
 * Creates (or updates) RocketMQ topics and subscription groups in one JVM, for createTopics in
 * infra/rocketmq.ts: the same requests as `mqadmin updateTopic -c` and `mqadmin updateSubGroup -c`,
 * without a JVM start-up (about a second of CPU) per topic or group.
 *
 * Run from the RocketMQ jars, compiled by infra/rocketmq.ts (or as a single source file):
 *   java -cp '<jars>/*' infra/RocketAdmin.java <namesrv> <cluster> <queues> <messageType> <timeoutMs> [topic:NAME | group:NAME]...
 *
 * It waits for a master broker of <cluster> in the name server, then sends each request to every
 * master, retrying each topic and group for up to <timeoutMs> (a fresh broker may not answer yet).
 * Stdout: "retry: ..." while waiting and "ok: topic NAME" / "ok: group NAME" as each is done.
 * Stderr: "error: ..." naming the topic or group that failed. Exit status 0 once all are done, 1 on
 * a failure, 2 on bad arguments. The JVM halts at the end: the admin client's orderly shutdown
 * (thread joins) takes about 3 s and leaves nothing behind that the broker needs.
 */
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.apache.rocketmq.common.MixAll;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.attribute.AttributeParser;
import org.apache.rocketmq.remoting.protocol.body.ClusterInfo;
import org.apache.rocketmq.remoting.protocol.route.BrokerData;
import org.apache.rocketmq.remoting.protocol.subscription.SubscriptionGroupConfig;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

public class RocketAdmin {
    private static final long RETRY_SLEEP_MS = 500;

    /** One request to every master: creates a topic or a group on the broker at `addr`. */
    private interface Request {
        void send(DefaultMQAdminExt admin, String addr) throws Exception;
    }

    private final DefaultMQAdminExt admin;
    private final String namesrv;
    private final String cluster;
    private final long timeoutMs;
    /** Broker name to master address, refreshed after a failed attempt. */
    private Map<String, String> masters = new TreeMap<>();

    private RocketAdmin(DefaultMQAdminExt admin, String namesrv, String cluster, long timeoutMs) {
        this.admin = admin;
        this.namesrv = namesrv;
        this.cluster = cluster;
        this.timeoutMs = timeoutMs;
    }

    /** The masters of the cluster as the name server lists them (empty until a broker registers). */
    private Map<String, String> fetchMasters() throws Exception {
        ClusterInfo info = admin.examineBrokerClusterInfo();
        Map<String, String> found = new TreeMap<>();
        Set<String> names = info.getClusterAddrTable() == null ? null : info.getClusterAddrTable().get(cluster);
        if (names == null) return found;
        for (String name : names) {
            BrokerData data = info.getBrokerAddrTable().get(name);
            String addr = data == null ? null : data.getBrokerAddrs().get(MixAll.MASTER_ID);
            if (addr != null) found.put(name, addr);
        }
        return found;
    }

    private static String describe(Throwable e) {
        String msg = e.getMessage();
        return e.getClass().getSimpleName() + (msg == null ? "" : ": " + msg.replace('\n', ' '));
    }

    /** Runs `request` on every master until it has succeeded on all of them or `timeoutMs` has passed. */
    private boolean run(String what, Request request) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        Set<String> done = new HashSet<>();
        String last = "";
        String told = "";
        for (int attempt = 1; ; attempt++) {
            try {
                if (masters.isEmpty()) masters = fetchMasters();
                if (masters.isEmpty()) {
                    last = "no master broker of cluster " + cluster + " is registered in the name server " + namesrv + " yet";
                } else {
                    for (Map.Entry<String, String> m : masters.entrySet()) {
                        if (done.contains(m.getKey())) continue;
                        request.send(admin, m.getValue());
                        done.add(m.getKey());
                    }
                    System.out.println("ok: " + what);
                    return true;
                }
            } catch (Exception e) {
                last = describe(e);
                masters = new TreeMap<>(); // the broker may have moved or not be registered yet
            }
            if (System.currentTimeMillis() + RETRY_SLEEP_MS > deadline) {
                System.err.println("error: " + what + " not created in cluster " + cluster + " (name server " + namesrv + ") after " + attempt
                    + " attempts in " + timeoutMs / 1000.0 + " s: " + last);
                return false;
            }
            // Said when the reason changes, else every 10th attempt (5 s), which the caller's
            // watchdog also takes as a sign of life.
            if (!last.equals(told) || attempt % 10 == 0) System.out.println("retry: " + what + ": " + last);
            told = last;
            Thread.sleep(RETRY_SLEEP_MS);
        }
    }

    private static void usage(String problem) {
        System.err.println("error: " + problem);
        System.err.println("usage: RocketAdmin <namesrv> <cluster> <queues> <messageType> <timeoutMs> [topic:NAME | group:NAME]...");
        System.out.flush();
        System.err.flush();
        Runtime.getRuntime().halt(2);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 5) usage("expected at least 5 arguments, got " + args.length);
        String namesrv = args[0];
        String cluster = args[1];
        int queues = 0;
        long timeoutMs = 0;
        try {
            queues = Integer.parseInt(args[2]);
            timeoutMs = Long.parseLong(args[4]);
        } catch (NumberFormatException e) {
            usage("queues and timeoutMs must be numbers: " + args[2] + ", " + args[4]);
        }
        String messageType = args[3];
        List<String> topics = new ArrayList<>();
        List<String> groups = new ArrayList<>();
        for (int i = 5; i < args.length; i++) {
            if (args[i].startsWith("topic:")) topics.add(args[i].substring(6));
            else if (args[i].startsWith("group:")) groups.add(args[i].substring(6));
            else usage("not topic:NAME or group:NAME: " + args[i]);
        }

        DefaultMQAdminExt admin = new DefaultMQAdminExt();
        admin.setNamesrvAddr(namesrv);
        admin.setInstanceName("RocketAdmin-" + ProcessHandle.current().pid() + "-" + System.currentTimeMillis());
        int status = 0;
        try {
            admin.start();
            RocketAdmin self = new RocketAdmin(admin, namesrv, cluster, timeoutMs);
            for (String topic : topics) {
                // As `mqadmin updateTopic -t T -r Q -w Q -a +message.type=M`: the tool hands the
                // -a text to AttributeParser.parseToMap, which keeps the + in the keys.
                TopicConfig config = new TopicConfig();
                config.setTopicName(topic);
                config.setReadQueueNums(queues);
                config.setWriteQueueNums(queues);
                config.setOrder(false);
                config.setAttributes(AttributeParser.parseToMap("+message.type=" + messageType));
                if (!self.run("topic " + topic, (a, addr) -> a.createAndUpdateTopicConfig(addr, config))) {
                    status = 1;
                    break;
                }
            }
            for (String group : status == 0 ? groups : new ArrayList<String>()) {
                // As `mqadmin updateSubGroup -g G`: no broadcast, not from the minimum offset.
                SubscriptionGroupConfig config = new SubscriptionGroupConfig();
                config.setGroupName(group);
                config.setConsumeBroadcastEnable(false);
                config.setConsumeFromMinEnable(false);
                if (!self.run("group " + group, (a, addr) -> a.createAndUpdateSubscriptionGroupConfig(addr, config))) {
                    status = 1;
                    break;
                }
            }
        } catch (Throwable e) {
            System.err.println("error: admin client on name server " + namesrv + " failed: " + describe(e));
            status = 1;
        }
        System.out.flush();
        System.err.flush();
        Runtime.getRuntime().halt(status);
    }
}
