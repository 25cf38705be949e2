/*
 * An HTTPS client in C, for the probe's TLS tests: the test links it with
 * OpenSSL's static libraries into a shared object that hides OpenSSL's
 * symbols (as Python wheels that bundle OpenSSL do), and a Python client
 * loads it with ctypes. Built twice: with a symbol table (the probe can
 * attach to the functions by name) and stripped (it cannot, and says so).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The body of one exchange on a connected socket; returns the status. */
static int exchange(SSL_CTX *ctx, int fd, const char *host, int port, const char *path)
{
    int status = -1;
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return -1;
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, host);
    SSL_set1_host(ssl, host);
    if (SSL_connect(ssl) == 1) {
        char request[512];
        int n = snprintf(request, sizeof request,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", path, host, port);
        if (SSL_write(ssl, request, n) == n) {
            char response[8192];
            size_t have = 0;
            int got;
            while (have < sizeof response - 1 &&
                   (got = SSL_read(ssl, response + have, (int)(sizeof response - 1 - have))) > 0)
                have += (size_t)got;
            response[have] = 0;
            if (have > 12 && strncmp(response, "HTTP/1.", 7) == 0)
                status = atoi(response + 9);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    return status;
}

/* GET https://host:port/path on 127.0.0.1, trusting ca_file; one
 * connection per request. Returns the HTTP status, or -1. */
int ft_https_get(const char *host, int port, const char *path, const char *ca_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return -1;
    int status = -1;
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) == 1) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            status = exchange(ctx, fd, host, port, path);
        if (fd >= 0)
            close(fd);
    }
    SSL_CTX_free(ctx);
    return status;
}
