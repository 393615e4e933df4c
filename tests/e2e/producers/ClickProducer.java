// A shortener's Java producer, for tests/e2e/test_any_producer.py: reads "key|value" lines from
// stdin and produces them to one partition, once per compression type named on the command
// line, each time as one batch (a long linger, then a flush).
// Run with the source launcher (no build step):
//   java -cp '<kafka libs>/*' ClickProducer.java <bootstrap> <topic> <partition> gzip snappy ...
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class ClickProducer {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partition = Integer.parseInt(args[2]);
        List<String> lines = new ArrayList<>();
        try (BufferedReader in =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                lines.add(line);
            }
        }
        for (int at = 3; at < args.length; at++) {
            String codec = args[at];
            Properties config = new Properties();
            config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            config.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            config.put(ProducerConfig.LINGER_MS_CONFIG, "60000");
            config.put(ProducerConfig.ACKS_CONFIG, "all");
            config.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
            config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(config)) {
                List<Future<?>> sent = new ArrayList<>();
                for (String line : lines) {
                    String[] keyValue = line.replace("{codec}", codec).split("\\|", 2);
                    sent.add(
                            producer.send(
                                    new ProducerRecord<>(topic, partition, keyValue[0], keyValue[1])));
                }
                producer.flush();
                for (Future<?> one : sent) {
                    one.get(); // fails the run, loudly, when a record was not written
                }
            }
            System.out.println("produced " + lines.size() + " with " + codec);
        }
    }
}
