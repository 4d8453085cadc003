package org.moe4j.dispatch.dist;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * The rendezvous' cryptography, JDK only: HMAC-SHA256 for key derivation and the mutual
 * challenge-response, AES-256-GCM for every frame after the handshake.
 *
 * <p>Every HMAC input is a label followed by length-prefixed fields, so no two different inputs
 * collide. The server and the client prove with different labels, so one side's proof can never
 * be replayed as the other's; both proofs cover both fresh nonces, so no recorded proof is valid
 * twice. Session keys differ per direction, and the GCM nonce is a per-direction frame counter that
 * advances only when a frame opens, so a forged frame is dropped without desynchronising the channel.
 */
final class RendezvousCrypto {
    /** Bytes of each side's random nonce. */
    static final int NONCE_BYTES = 32;
    /** Bytes of an HMAC-SHA256 proof. */
    static final int PROOF_BYTES = 32;
    /** Bytes GCM adds to every sealed frame. */
    static final int TAG_BYTES = 16;

    private static final SecureRandom RANDOM = new SecureRandom();
    private static final String HMAC = "HmacSHA256";

    private RendezvousCrypto() {
    }

    /** The job key: HMAC(token, "moe4j rendezvous v2 key" | jobId). The token is not kept. */
    static byte[] jobKey(byte[] token, String jobId) {
        return hmac(token, "moe4j rendezvous v2 key", utf8(jobId));
    }

    /** @return fresh random bytes for a nonce */
    static byte[] nonce() {
        byte[] n = new byte[NONCE_BYTES];
        RANDOM.nextBytes(n);
        return n;
    }

    /** What rank 0 sends to prove it holds the key, bound to both nonces. */
    static byte[] serverProof(byte[] key, String jobId, byte[] clientNonce, byte[] serverNonce) {
        return hmac(key, "server proof", utf8(jobId), clientNonce, serverNonce);
    }

    /** What a joining rank sends to prove it holds the key, bound to both nonces and to its claims. */
    static byte[] clientProof(byte[] key, String jobId, byte[] clientNonce, byte[] serverNonce,
                              int worldSize, int rank, String host) {
        byte[] claims = ByteBuffer.allocate(8).putInt(worldSize).putInt(rank).array();
        return hmac(key, "client proof", utf8(jobId), clientNonce, serverNonce, claims, utf8(host));
    }

    /** Constant-time comparison of a received proof with the expected one. */
    static boolean sameProof(byte[] expected, byte[] received) {
        return MessageDigest.isEqual(expected, received);
    }

    /**
     * @param server true on rank 0's side of the connection
     * @return the encrypted channel of one connection after a successful handshake
     */
    static Session session(byte[] key, byte[] clientNonce, byte[] serverNonce, boolean server) {
        byte[] c2s = hmac(key, "client to server", clientNonce, serverNonce);
        byte[] s2c = hmac(key, "server to client", clientNonce, serverNonce);
        return server ? new Session(s2c, c2s) : new Session(c2s, s2c);
    }

    static byte[] hmac(byte[] key, String label, byte[]... fields) {
        try {
            Mac mac = Mac.getInstance(HMAC);
            mac.init(new SecretKeySpec(key, HMAC));
            mac.update(utf8(label));
            for (byte[] f : fields) {
                mac.update(ByteBuffer.allocate(4).putInt(f.length).array());
                mac.update(f);
            }
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available in this JDK", e);
        }
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /**
     * AES-256-GCM over one connection: frames are sealed with a per-direction counter as the GCM
     * nonce and the frame type as additional data. Used by one thread at a time.
     */
    static final class Session {
        private final SecretKeySpec sendKey;
        private final SecretKeySpec receiveKey;
        private final Cipher cipher;
        private long sent;
        private long received;

        private Session(byte[] sendKey, byte[] receiveKey) {
            this.sendKey = new SecretKeySpec(sendKey, "AES");
            this.receiveKey = new SecretKeySpec(receiveKey, "AES");
            try {
                this.cipher = Cipher.getInstance("AES/GCM/NoPadding");
            } catch (GeneralSecurityException e) {
                throw new IllegalStateException("AES/GCM is not available in this JDK", e);
            }
        }

        /** @return the payload encrypted and authenticated, bound to {@code type} and to its position */
        byte[] seal(int type, byte[] plain) {
            try {
                cipher.init(Cipher.ENCRYPT_MODE, sendKey, iv(sent));
                cipher.updateAAD(aad(type));
                byte[] out = cipher.doFinal(plain);
                sent++;
                return out;
            } catch (GeneralSecurityException e) {
                throw new IllegalStateException("AES/GCM seal failed", e);
            }
        }

        /**
         * @return the plain payload, or null when the frame is not the next authentic frame of this
         *         connection (forged, corrupted, replayed or reordered); the channel stays usable
         */
        byte[] open(int type, byte[] sealed) {
            if (sealed.length < TAG_BYTES) {
                return null;
            }
            try {
                cipher.init(Cipher.DECRYPT_MODE, receiveKey, iv(received));
                cipher.updateAAD(aad(type));
                byte[] out = cipher.doFinal(sealed);
                received++;
                return out;
            } catch (AEADBadTagException e) {
                return null;
            } catch (GeneralSecurityException e) {
                throw new IllegalStateException("AES/GCM open failed", e);
            }
        }

        private static GCMParameterSpec iv(long counter) {
            return new GCMParameterSpec(TAG_BYTES * 8, ByteBuffer.allocate(12).putInt(0).putLong(counter).array());
        }

        private static byte[] aad(int type) {
            return ByteBuffer.allocate(4).putInt(type).array();
        }
    }
}
