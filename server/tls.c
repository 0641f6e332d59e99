/* TLS on an optional port (`tls-port`, `tls-cert-file`, `tls-key-file`):
 * libevent's OpenSSL bufferevents carry the bytes; the request parser, the
 * command dispatch and the reply buffer are the plain clients' (net.c).
 *
 * Replies move from the client's obuf into the bufferevent at most
 * SRV_TLS_OUT_CHUNK at a time, the next chunk when the previous one has
 * been written, so the output-buffer limit keeps counting what the client
 * left unread. Client certificates are not requested (Redis's
 * `tls-auth-clients no`); TLS 1.2 is the oldest protocol accepted.
 *
 * Built only with VELA_HAVE_TLS (CMake found OpenSSL and libevent_openssl);
 * otherwise a configured tls-port is a start-up error. */
#include "server/srv_int.h"

#ifdef VELA_HAVE_TLS

#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* Reply bytes handed to OpenSSL at a time. */
#define SRV_TLS_OUT_CHUNK (256u << 10)

static int tls_err(vela_err_t *err, const char *what, const char *path)
{
	char buf[160] = "";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return vela_err_set(err, VELA_EINVAL, "%s '%s': %s", what, path ? path : "",
			    buf[0] ? buf : "failed");
}

static void tls_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			  int salen, void *arg)
{
	client_accept(arg, fd, sa, true);
}

int srv_tls_start(srv_t *s, vela_err_t *err)
{
	srv_config_t *c = &s->cfg;
	if (c->tls_port == 0)
		return VELA_OK;
	if (c->tls_cert_file == NULL || c->tls_key_file == NULL)
		return vela_err_set(err, VELA_EINVAL, "tls-port needs tls-cert-file and tls-key-file");
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return tls_err(err, "cannot create the TLS context", NULL);
	s->ssl_ctx = ctx;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Lets a client write its request before reading the server's last
	 * handshake flight, and partial writes for the bufferevent. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert_file) != 1)
		return tls_err(err, "tls-cert-file", c->tls_cert_file);
	if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key_file, SSL_FILETYPE_PEM) != 1)
		return tls_err(err, "tls-key-file", c->tls_key_file);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return tls_err(err, "tls-key-file does not match tls-cert-file", c->tls_key_file);
	s->tls_listener = srv_listen_port(s, c->tls_port, tls_on_accept, &s->tls_port, err);
	if (s->tls_listener == NULL)
		return err ? err->code : VELA_EIO;
	vela_info("TLS on %s:%d (certificate %s)", c->bind, s->tls_port, c->tls_cert_file);
	return VELA_OK;
}

void srv_tls_stop(srv_t *s)
{
	if (s->tls_listener) {
		evconnlistener_free(s->tls_listener);
		s->tls_listener = NULL;
	}
}

void srv_tls_free(srv_t *s)
{
	SSL_CTX_free(s->ssl_ctx);
	s->ssl_ctx = NULL;
}

static void tls_on_read(struct bufferevent *bev, void *arg)
{
	srv_client_t *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	while (!c->gone && evbuffer_get_length(in) > 0) {
		if (!client_qbuf_reserve(c)) {
			client_close(c);
			return;
		}
		int n = evbuffer_remove(in, c->qbuf + c->qlen, c->qcap - c->qlen);
		if (n <= 0)
			break;
		client_input(c, (size_t)n); /* limits, commands, flush */
	}
}

/* The bufferevent's output drained (low watermark 0): the next chunk. */
static void tls_on_write(struct bufferevent *bev, void *arg)
{
	tls_client_flush(arg);
}

static void tls_on_event(struct bufferevent *bev, short what, void *arg)
{
	srv_client_t *c = arg;
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e) {
			char buf[160];
			ERR_error_string_n(e, buf, sizeof(buf));
			vela_debug("client %llu (%s): TLS: %s", (unsigned long long)c->id, c->addr, buf);
		}
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_close(c);
}

int tls_client_attach(srv_client_t *c)
{
	SSL *ssl = SSL_new(c->srv->ssl_ctx);
	if (ssl == NULL) {
		evutil_closesocket(c->fd);
		return -1;
	}
	/* Deferred callbacks: ours never run inside an evbuffer_add of ours. */
	c->bev = bufferevent_openssl_socket_new(c->srv->base, c->fd, ssl,
						BUFFEREVENT_SSL_ACCEPTING,
						BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->bev == NULL) {
		SSL_free(ssl);
		evutil_closesocket(c->fd);
		return -1;
	}
	/* Clients that just close the socket are common (redis-cli does). */
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	bufferevent_setcb(c->bev, tls_on_read, tls_on_write, tls_on_event, c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0) {
		bufferevent_free(c->bev); /* closes the socket */
		c->bev = NULL;
		return -1;
	}
	return 0;
}

void tls_client_flush(srv_client_t *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t queued = evbuffer_get_length(out);
	if (c->opos < c->olen && queued < SRV_TLS_OUT_CHUNK) {
		size_t n = c->olen - c->opos;
		if (n > SRV_TLS_OUT_CHUNK - queued)
			n = SRV_TLS_OUT_CHUNK - queued;
		if (evbuffer_add(out, c->obuf + c->opos, n) != 0) {
			client_close(c);
			return;
		}
		c->opos += n;
		queued += n;
	}
	if (c->opos < c->olen)
		return; /* more once this chunk is written */
	client_obuf_drained(c);
	if (c->closing && queued == 0)
		client_close(c); /* QUIT, a protocol error: once the reply is out */
}

void tls_client_close(srv_client_t *c)
{
	bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE: the SSL and the socket too */
	c->bev = NULL;
}

void tls_client_pause_reads(srv_client_t *c)
{
	bufferevent_disable(c->bev, EV_READ);
}

#else /* !VELA_HAVE_TLS */

int srv_tls_start(srv_t *s, vela_err_t *err)
{
	if (s->cfg.tls_port == 0)
		return VELA_OK;
	return vela_err_set(err, VELA_EUNSUPPORTED, "tls-port: this velad was built without TLS "
				"(CMake found no OpenSSL / libevent_openssl)");
}

void srv_tls_stop(srv_t *s) {}
void srv_tls_free(srv_t *s) {}

int tls_client_attach(srv_client_t *c)
{
	evutil_closesocket(c->fd);
	return -1;
}

void tls_client_flush(srv_client_t *c) {}
void tls_client_close(srv_client_t *c) {}
void tls_client_pause_reads(srv_client_t *c) {}

#endif
