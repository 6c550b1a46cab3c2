package manifest

import (
	"strconv"
	"strings"
)

// The collection script prints sections between marker lines:
//
//	<marker> begin 1
//	<marker> start NAME
//	...the section's lines...
//	<marker> stop NAME EXIT_CODE
//	<marker> absent NAME          (the tool is not installed)
//	<marker> done
//
// Every marker line is preceded by an empty line so that it starts a line
// even when the output before it did not end with a newline.
//
// Sections:
//   - os-release: /etc/os-release (or /usr/lib/os-release) as it is;
//   - uname: uname -r, then uname -m;
//   - dpkg: dpkg-query -W, one package a line: status abbreviation, name,
//     version, architecture, separated by tabs ("ii \tbash\t5.2.15-2+b7\tamd64");
//   - rpm: rpm -qa (when rpm --version says "RPM version"), one package a line: name, epoch (empty when none),
//     version, release, architecture, separated by tabs;
//   - apk-list: apk list -I, "musl-1.2.4-r2 x86_64 {musl} (MIT) [installed]";
//     when it fails (an apk without list), apk-info: apk info -v, "musl-1.2.4-r2";
//   - files: one line a file, fields separated by spaces:
//     "F <pattern index> <sha256 as sha256sum prints it> p <path>" or, for a
//     path with characters outside the pattern set, "... x <path in hex>";
//     "E <pattern index> notfile|unreadable p|x <path>"; "N <pattern index>"
//     when the pattern matches nothing; "L" when MaxFiles were hashed.
//
// The script needs only POSIX sh, cat, uname, od and tr, and sha256sum for
// files; it works with busybox. Standard input is /dev/null throughout, and
// LC_ALL=C keeps the tools' output in one format.
func buildScript(marker string, opts Options) string {
	var b strings.Builder
	line := func(s ...string) {
		for _, x := range s {
			b.WriteString(x)
		}
		b.WriteByte('\n')
	}
	line("exec </dev/null")
	line("LC_ALL=C; export LC_ALL")
	line("M='", marker, "'")
	line(`m() { printf '\n%s %s\n' "$M" "$*"; }`)
	line("m begin 1")

	line("m start os-release")
	line("if [ -r /etc/os-release ]; then cat /etc/os-release; elif [ -r /usr/lib/os-release ]; then cat /usr/lib/os-release; fi")
	line("m stop os-release $?")

	line("m start uname")
	line("uname -r; uname -m")
	line("m stop uname $?")

	line("if command -v dpkg-query >/dev/null 2>&1; then")
	line("m start dpkg")
	line(`dpkg-query -W -f='${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n'`)
	line("m stop dpkg $?")
	line("else m absent dpkg; fi")

	// rpm only if it is RPM: busybox has an rpm applet that installs
	// packages but keeps no database, and takes the name where busybox is
	// the shell's standalone applet set.
	line(`if command -v rpm >/dev/null 2>&1 && case "$(rpm --version 2>/dev/null)" in "RPM version "*) true;; *) false;; esac; then`)
	line("m start rpm")
	line(`rpm -qa --qf '%{NAME}\t%|EPOCH?{%{EPOCH}}:{}|\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n'`)
	line("m stop rpm $?")
	line("else m absent rpm; fi")

	line("if command -v apk >/dev/null 2>&1; then")
	line("m start apk-list")
	line("apk list -I; r=$?")
	line("m stop apk-list $r")
	line("if [ $r -ne 0 ]; then m start apk-info; apk info -v; m stop apk-info $?; fi")
	line("else m absent apk; fi")

	if len(opts.Files) > 0 {
		line("m start files")
		// sudo -n, when the user is not root and may use it without a
		// password (cloud images' default users can), so that root-only
		// files such as host keys can be hashed.
		line(`S=; if [ "$(id -u 2>/dev/null)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then S='sudo -n'; fi`)
		line("n=0")
		line("h() {")
		line(`  if [ ! -e "$2" ] && [ ! -L "$2" ]; then printf 'N %s\n' "$1"; return 0; fi`)
		line("  if [ $n -ge ", strconv.Itoa(opts.MaxFiles), " ]; then printf 'L\\n'; return 1; fi")
		line("  n=$((n+1))")
		line(`  case $2 in *[!A-Za-z0-9._/+@%:,=~-]*) p="x $(printf %s "$2" | od -An -v -tx1 | tr -d ' \n')";; *) p="p $2";; esac`)
		line(`  if [ ! -f "$2" ]; then printf 'E %s notfile %s\n' "$1" "$p"; return 0; fi`)
		line(`  s=$($S sha256sum "$2" 2>/dev/null) || { printf 'E %s unreadable %s\n' "$1" "$p"; return 0; }`)
		line(`  s=${s#\\}`)
		line(`  printf 'F %s %s %s\n' "$1" "${s%% *}" "$p"`)
		line("}")
		for i, p := range opts.Files {
			// p passed CheckFilePattern: no character the shell reads
			// but the glob ones, which it must expand.
			line("for f in ", p, `; do h `, strconv.Itoa(i), ` "$f" || break; done`)
		}
		line("m stop files 0")
	}
	line("m done")
	return b.String()
}
