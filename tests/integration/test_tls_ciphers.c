/*
 * test_tls_ciphers.c — which TLS parameters parleyd's TLS port accepts.
 *
 * A real OpenSSL client handshakes with a real parleyd (EC P-256 test
 * certificate):
 *   - TLS 1.2 restricted to one CBC / SHA-1 suite (ECDHE-ECDSA-AES128-SHA,
 *     ECDHE-ECDSA-AES256-SHA, AES256-SHA, AES128-SHA256) fails;
 *   - TLS 1.2 restricted to one ECDHE AEAD suite (AES-128/256-GCM,
 *     ChaCha20-Poly1305) succeeds and negotiates that suite;
 *   - TLS 1.3 (library defaults) succeeds; TLS 1.1 fails.
 * The certificate chain is verified against the test CA, so a success is
 * a real handshake with parleyd.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "itest.h"

/* 1 when the handshake completed, 0 when it failed; *suite = the
 * negotiated cipher's name. */
static int handshake(uint16_t port, int min_v, int max_v, const char *ciphers,
		     char *suite, size_t cap)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	IT_CHECK(ctx);
	SSL_CTX_set_security_level(ctx, 0); /* let the client offer old suites */
	IT_CHECK(SSL_CTX_set_min_proto_version(ctx, min_v) == 1);
	IT_CHECK(SSL_CTX_set_max_proto_version(ctx, max_v) == 1);
	if (ciphers)
		IT_CHECK(SSL_CTX_set_cipher_list(ctx, ciphers) == 1,
			 "client cannot use %s", ciphers);
	IT_CHECK(SSL_CTX_load_verify_locations(ctx, it_path("ca.pem"), NULL) == 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int fd = it_tcp_connect(port);
	IT_CHECK(fd >= 0);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	SSL *ssl = SSL_new(ctx);
	IT_CHECK(ssl);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	IT_CHECK(SSL_set1_host(ssl, "localhost") == 1);
	int ok = SSL_connect(ssl) == 1;
	snprintf(suite, cap, "%s", ok ? SSL_get_cipher_name(ssl) : "");
	if (ok)
		SSL_shutdown(ssl);
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	return ok;
}

int main(void)
{
	it_init("tls_ciphers");
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);
	char suite[128];

	const char *weak[] = {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
			      "AES256-SHA", "AES128-SHA256", "ECDHE-ECDSA-AES128-SHA256"};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(weak); i++)
		IT_CHECK(!handshake(srv.tls_port, TLS1_2_VERSION, TLS1_2_VERSION,
				    weak[i], suite, sizeof suite),
			 "TLS 1.2 with %s was accepted (%s)", weak[i], suite);

	const char *aead[] = {"ECDHE-ECDSA-AES128-GCM-SHA256",
			      "ECDHE-ECDSA-AES256-GCM-SHA384",
			      "ECDHE-ECDSA-CHACHA20-POLY1305"};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(aead); i++) {
		IT_CHECK(handshake(srv.tls_port, TLS1_2_VERSION, TLS1_2_VERSION,
				   aead[i], suite, sizeof suite),
			 "TLS 1.2 with %s failed", aead[i]);
		IT_CHECK(!strcmp(suite, aead[i]), "negotiated %s", suite);
	}
	/* everything a default TLS 1.2 client offers: an AEAD suite wins */
	IT_CHECK(handshake(srv.tls_port, TLS1_2_VERSION, TLS1_2_VERSION, NULL,
			   suite, sizeof suite));
	IT_CHECK(strstr(suite, "GCM") || strstr(suite, "CHACHA20"), "%s", suite);
	IT_CHECK(handshake(srv.tls_port, TLS1_3_VERSION, TLS1_3_VERSION, NULL,
			   suite, sizeof suite), "TLS 1.3 failed");
	IT_CHECK(!handshake(srv.tls_port, TLS1_1_VERSION, TLS1_1_VERSION, NULL,
			    suite, sizeof suite), "TLS 1.1 accepted");

	/* and the product path still works over TLS */
	struct parley_client *c = it_client(&srv, "alice", "d", 1, NULL);
	IT_CHECK(!strcmp(parley_client_user_id(c), "alice"));
	parley_client_free(c);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
	printf("tls_ciphers: ok\n");
	return 0;
}
