package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The sealed channel: forged, replayed, reordered or retyped frames never open, and the channel survives them. */
class RendezvousCryptoTest {
    private static final int NCCL_UNIQUE_ID_BYTES = 128;

    private static boolean contains(byte[] hay, byte[] needle) {
        for (int i = 0; i + needle.length <= hay.length; i++) {
            if (Arrays.equals(hay, i, i + needle.length, needle, 0, needle.length)) {
                return true;
            }
        }
        return false;
    }

    @Test
    void forgedFramesAreRejectedWithoutBreakingTheChannel() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random rnd = new Random(seed);
        byte[] key = Ranks.AUTH.key();
        byte[] cn = RendezvousCrypto.nonce();
        byte[] sn = RendezvousCrypto.nonce();
        RendezvousCrypto.Session server = RendezvousCrypto.session(key, cn, sn, true);
        RendezvousCrypto.Session client = RendezvousCrypto.session(key, cn, sn, false);
        byte[] uniqueId = new byte[NCCL_UNIQUE_ID_BYTES];
        rnd.nextBytes(uniqueId);

        byte[] first = server.seal(4, uniqueId);
        assertFalse(contains(first, Arrays.copyOf(uniqueId, 16)), "the id must not travel in clear");
        byte[] forged = first.clone();
        forged[rnd.nextInt(forged.length)] ^= (byte) (1 + rnd.nextInt(255));
        assertNull(client.open(4, forged), "a modified frame opens");
        byte[] garbage = new byte[first.length];
        rnd.nextBytes(garbage);
        assertNull(client.open(4, garbage), "a random frame opens");
        assertNull(client.open(5, first), "a frame opens under another message type");
        assertNull(client.open(4, new byte[3]), "a frame shorter than the tag opens");
        assertArrayEquals(uniqueId, client.open(4, first), "the authentic frame after the forgeries");

        assertNull(client.open(4, first), "a replayed frame opens");
        byte[] second = server.seal(6, "two".getBytes(StandardCharsets.UTF_8));
        byte[] third = server.seal(6, "three".getBytes(StandardCharsets.UTF_8));
        assertNull(client.open(6, third), "a frame opens out of order");
        assertArrayEquals("two".getBytes(StandardCharsets.UTF_8), client.open(6, second));
        assertArrayEquals("three".getBytes(StandardCharsets.UTF_8), client.open(6, third));

        RendezvousCrypto.Session stranger = RendezvousCrypto.session(
                RendezvousAuth.of(Ranks.AUTH.jobId(), "another secret of 32 bytes length".getBytes(StandardCharsets.UTF_8))
                        .key(), cn, sn, false);
        assertNull(stranger.open(4, server.seal(4, uniqueId)), "a session without the secret opens a frame");
        byte[] back = client.seal(5, new byte[] {1, 2, 3});
        assertNull(client.open(5, back), "a client opens its own frame: the directions share a key");
        assertArrayEquals(new byte[] {1, 2, 3}, server.open(5, back));
    }

    @Test
    void proofsAreBoundToTheSideTheNoncesTheKeyAndTheClaims() {
        byte[] key = Ranks.AUTH.key();
        byte[] cn = RendezvousCrypto.nonce();
        byte[] sn = RendezvousCrypto.nonce();
        byte[] client = RendezvousCrypto.clientProof(key, "j", cn, sn, 4, 1, "h");
        assertTrue(RendezvousCrypto.sameProof(client, RendezvousCrypto.clientProof(key, "j", cn, sn, 4, 1, "h")));
        assertFalse(RendezvousCrypto.sameProof(client, RendezvousCrypto.clientProof(key, "j", cn, sn, 4, 2, "h")));
        assertFalse(RendezvousCrypto.sameProof(client, RendezvousCrypto.clientProof(key, "j", cn, sn, 5, 1, "h")));
        assertFalse(RendezvousCrypto.sameProof(client, RendezvousCrypto.clientProof(key, "j", sn, cn, 4, 1, "h")));
        assertFalse(RendezvousCrypto.sameProof(client, RendezvousCrypto.clientProof(key, "k", cn, sn, 4, 1, "h")));
        assertFalse(RendezvousCrypto.sameProof(RendezvousCrypto.serverProof(key, "j", cn, sn),
                Arrays.copyOf(client, client.length)), "a client proof passes as the server's");
        byte[] otherKey = RendezvousAuth.of("j", "another secret of 32 bytes length".getBytes(StandardCharsets.UTF_8)).key();
        assertFalse(RendezvousCrypto.sameProof(client, RendezvousCrypto.clientProof(otherKey, "j", cn, sn, 4, 1, "h")));
        assertFalse(Arrays.equals(cn, RendezvousCrypto.nonce()), "nonces repeat");
    }
}
