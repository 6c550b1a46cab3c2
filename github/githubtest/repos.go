package githubtest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

func (s *Server) contents(w http.ResponseWriter, r *http.Request, repo, p string) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = "main"
	}
	p = strings.Trim(p, "/")
	s.mu.Lock()
	files := s.files[repo+"@"+ref]
	s.mu.Unlock()
	if files == nil {
		writeError(w, http.StatusNotFound, "No commit found for the ref "+ref)
		return
	}
	base := s.URL() + "repos/" + repo + "/contents/"
	fileJSON := func(p string, e entry) map[string]any {
		m := map[string]any{
			"type": "file", "name": path.Base(p), "path": p, "size": len(e.content),
			"sha": gitSHA(e.content), "url": base + p + "?ref=" + ref,
		}
		if len(e.content) > 1<<20 {
			// Like GitHub: files between 1 and 100 MB come without content.
			m["encoding"], m["content"] = "none", ""
		} else {
			m["encoding"], m["content"] = "base64", wrapBase64(base64.StdEncoding.EncodeToString(e.content))
		}
		return m
	}
	if e, ok := files[p]; ok && p != "" {
		if e.symlink == "" {
			writeJSON(w, http.StatusOK, fileJSON(p, e))
			return
		}
		target := path.Clean(path.Join(path.Dir(p), e.symlink))
		if t, ok := files[target]; ok && t.symlink == "" && !strings.HasPrefix(target, "../") {
			writeJSON(w, http.StatusOK, fileJSON(target, t))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"type": "symlink", "name": path.Base(p), "path": p, "target": e.symlink,
			"size": len(e.symlink), "sha": gitSHA([]byte(e.symlink)), "url": base + p + "?ref=" + ref,
		})
		return
	}
	list := dirList(files, p)
	if len(list) == 0 {
		if real, ok := s.throughSymlink(files, p); ok {
			// A server that resolves the path through a symlinked directory
			// answers for the target, under the target's paths.
			if e, ok := files[real]; ok && e.symlink == "" {
				writeJSON(w, http.StatusOK, fileJSON(real, e))
				return
			}
			list = dirList(files, real)
		}
	}
	if len(list) == 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	// Like GitHub: "This API has an upper limit of 1,000 files for a directory."
	writeJSON(w, http.StatusOK, list[:min(len(list), MaxListed)])
}

// MaxListed is the most entries the contents API lists for a directory.
const MaxListed = 1000

// throughSymlink resolves p through its first component that is a symlink
// to a directory of the repository, when the server follows them
// (SetFollowSymlinkedDirs).
func (s *Server) throughSymlink(files map[string]entry, p string) (string, bool) {
	s.mu.Lock()
	follow := s.followDirs
	s.mu.Unlock()
	if !follow {
		return "", false
	}
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		link := strings.Join(parts[:i], "/")
		e, ok := files[link]
		if !ok || e.symlink == "" {
			continue
		}
		target := path.Clean(path.Join(path.Dir(link), e.symlink))
		if target == ".." || strings.HasPrefix(target, "../") || strings.HasPrefix(e.symlink, "/") {
			return "", false
		}
		return path.Join(append([]string{target}, parts[i:]...)...), true
	}
	return "", false
}

// dirList lists directory p of files as the contents API does: every entry
// one level below p, sorted by name; none when p is no directory.
func dirList(files map[string]entry, p string) []map[string]any {
	dirPrefix := ""
	if p != "" {
		dirPrefix = p + "/"
	}
	seen := map[string]map[string]any{}
	for fp, e := range files {
		rest, ok := strings.CutPrefix(fp, dirPrefix)
		if !ok || rest == "" {
			continue
		}
		name, sub, isDir := strings.Cut(rest, "/")
		_ = sub
		full := dirPrefix + name
		switch {
		case isDir:
			seen[name] = map[string]any{"type": "dir", "name": name, "path": full, "size": 0, "sha": gitSHA([]byte(full))}
		case e.symlink != "":
			seen[name] = map[string]any{"type": "symlink", "name": name, "path": full, "size": len(e.symlink), "sha": gitSHA([]byte(e.symlink))}
		default:
			seen[name] = map[string]any{"type": "file", "name": name, "path": full, "size": len(e.content), "sha": gitSHA(e.content)}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	list := make([]map[string]any, 0, len(names))
	for _, n := range names {
		list = append(list, seen[n])
	}
	return list
}

func (s *Server) compare(w http.ResponseWriter, r *http.Request, repo, basehead string) {
	base, head, ok := strings.Cut(basehead, "...")
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	c, ok := s.changed[repo+"|"+base+"|"+head]
	var files []map[string]any
	var given []Commit
	commits := 0
	if ok {
		files = slices.Clone(c.files[:min(len(c.files), 300)])
		commits = c.commits
		given = slices.Clone(c.list)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	// Commits are paginated (250 without paging parameters, as GitHub);
	// the files, capped at 300, come with every page.
	q := r.URL.Query()
	perPage, page := 250, 1
	if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	lo := min((page-1)*perPage, commits)
	hi := min(lo+perPage, commits)
	if hi < commits && (q.Has("page") || q.Has("per_page")) {
		next := *r.URL
		nq := next.Query()
		nq.Set("page", strconv.Itoa(page+1))
		nq.Set("per_page", strconv.Itoa(perPage))
		next.RawQuery = nq.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, s.ts.URL, next.RequestURI()))
	}
	list := []map[string]any{}
	for i := lo; i < hi; i++ {
		if i < len(given) {
			g := given[i]
			list = append(list, map[string]any{"sha": g.SHA, "html_url": s.ts.URL + "/" + repo + "/commit/" + g.SHA,
				"commit": map[string]any{"message": g.Message, "author": map[string]any{"name": g.Author, "date": g.Date.UTC().Format(time.RFC3339)}}})
			continue
		}
		id := gitSHA([]byte(fmt.Sprintf("%s %d", head, i)))
		list = append(list, map[string]any{"sha": id, "commit": map[string]any{"message": fmt.Sprintf("commit %d", i)}})
	}
	if files == nil {
		files = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status": "ahead", "ahead_by": commits, "behind_by": 0, "total_commits": commits,
		"commits": list, "files": files,
	})
}
