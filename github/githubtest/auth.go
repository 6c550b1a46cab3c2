package githubtest

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// auth identifies the caller without keeping the credential.
func (s *Server) auth(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if h == "" {
		return ""
	}
	scheme, cred, _ := strings.Cut(h, " ")
	switch strings.ToLower(scheme) {
	case "token", "bearer":
	default:
		return "invalid"
	}
	if cred == s.token {
		return "token"
	}
	s.mu.Lock()
	it, ok := s.instToks[cred]
	key := s.key
	s.mu.Unlock()
	if ok {
		if time.Now().After(it.expires) {
			return "invalid"
		}
		return "installation:" + strconv.FormatInt(it.installation, 10)
	}
	if strings.Count(cred, ".") == 2 && key != nil {
		if err := verifyJWT(cred, &key.PublicKey, s.appID); err == nil {
			return "app:" + strconv.FormatInt(s.appID, 10)
		}
	}
	return "invalid"
}

// verifyJWT checks an App JWT as GitHub does: RS256 signed by the App's
// key, issued by the App, not expired, and not valid for more than 10 minutes.
func verifyJWT(tok string, pub *rsa.PublicKey, appID int64) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Iat int64           `json:"iat"`
		Exp int64           `json:"exp"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return err
	}
	if hdr.Alg != "RS256" {
		return fmt.Errorf("alg %q, want RS256", hdr.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	if err := verifyRS256(pub, parts[0]+"."+parts[1], sig); err != nil {
		return err
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return err
	}
	iss := strings.Trim(string(claims.Iss), `"`)
	if iss != strconv.FormatInt(appID, 10) {
		return fmt.Errorf("iss %s, want %d", iss, appID)
	}
	now := time.Now().Unix()
	if claims.Exp <= now || claims.Iat > now+60 || claims.Exp-claims.Iat > 600 {
		return fmt.Errorf("iat %d exp %d out of range at %d", claims.Iat, claims.Exp, now)
	}
	return nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (s *Server) accessToken(w http.ResponseWriter, c Call, id string) {
	inst, err := strconv.ParseInt(id, 10, 64)
	if err != nil || inst <= 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if !strings.HasPrefix(c.Auth, "app:") {
		writeError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	tok := "ghs_" + randHex(18)
	s.mu.Lock()
	exp := time.Now().Add(s.lifetime).UTC().Truncate(time.Second)
	s.instToks[tok] = instToken{installation: inst, expires: exp}
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":                tok,
		"expires_at":           exp.Format(time.RFC3339),
		"permissions":          map[string]string{"contents": "read", "statuses": "write", "checks": "write"},
		"repository_selection": "all",
	})
}

func verifyRS256(pub *rsa.PublicKey, signed string, sig []byte) error {
	sum := sha256.Sum256([]byte(signed))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("JWT signature: %w", err)
	}
	return nil
}
