package source

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// authenticateMethod is etcd's login RPC.
const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

// login logs in to etcd with a user and password, and renews the login when etcd has forgotten
// it (a restart forgets etcd's default "simple" tokens; their TTL, 5 minutes unused, ends them;
// JWTs expire).
//
// The client does this itself when given the credentials, but it sends the stale token along
// with the login, and etcd before 3.5 (Debian 12 ships 3.4) checks that token and refuses the
// login for it; the client then logs in again, recursively, until the request's context ends
// (etcd PR 12549 worked around it in clients v3.5; v3.6 dropped that). So the client is given no
// credentials: login adds the token to every request but the login itself, as per-RPC
// credentials, and renews it from an interceptor.
type login struct {
	user, password string

	mu    sync.Mutex
	token string // "" before the first login, and when etcd has authentication off
	held  bool   // a login succeeded: token is what etcd wants, even if ""
}

// dialOptions wire l into a client.
func (l *login) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithPerRPCCredentials(l),
		grpc.WithChainUnaryInterceptor(l.unary),
		grpc.WithChainStreamInterceptor(l.stream),
	}
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (l *login) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if ri, ok := credentials.RequestInfoFromContext(ctx); ok && ri.Method == authenticateMethod {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == "" {
		return nil, nil
	}
	return map[string]string{rpctypes.TokenFieldNameGRPC: l.token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: etcd's plain http
// endpoints take credentials too.
func (l *login) RequireTransportSecurity() bool { return false }

// unary logs in before the first request, and again, then repeats the request once, when etcd
// no longer knows the token.
func (l *login) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == authenticateMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if err := l.ensure(ctx, cc); err != nil {
		return err
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if !forgotten(err) {
		return err
	}
	if err := l.renew(ctx, cc); err != nil {
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// stream logs in before the first stream. A stream refused for its token fails; the unary
// request that follows (the source reads before it watches) renews the login.
func (l *login) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := l.ensure(ctx, cc); err != nil {
		return nil, err
	}
	return streamer(ctx, desc, cc, method, opts...)
}

func (l *login) ensure(ctx context.Context, cc *grpc.ClientConn) error {
	l.mu.Lock()
	held := l.held
	l.mu.Unlock()
	if held {
		return nil
	}
	return l.renew(ctx, cc)
}

// renew logs in and keeps the new token.
func (l *login) renew(ctx context.Context, cc *grpc.ClientConn) error {
	resp, err := pb.NewAuthClient(cc).Authenticate(ctx, &pb.AuthenticateRequest{Name: l.user, Password: l.password})
	token := ""
	switch {
	case err == nil:
		token = resp.Token
	case errors.Is(rpctypes.Error(err), rpctypes.ErrAuthNotEnabled):
	default:
		return fmt.Errorf("logging in as %q: %w", l.user, rpctypes.Error(err))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.token, l.held = token, true
	return nil
}

// forgotten reports whether etcd refused a request for a token it no longer accepts.
func forgotten(err error) bool {
	err = rpctypes.Error(err)
	return errors.Is(err, rpctypes.ErrInvalidAuthToken) || errors.Is(err, rpctypes.ErrAuthOldRevision) || errors.Is(err, rpctypes.ErrUserEmpty)
}
