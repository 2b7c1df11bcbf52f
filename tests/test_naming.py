import re
import threading

from swiftdrop.naming import MaildirNamer, sanitise_hostname

NAME = re.compile(r"^cur/(\d+)\.M(\d{6})P(\d+)Q(\d+)\.([^/:]+),S=(\d+)$")


def test_name_fields_come_from_one_instant():
    namer = MaildirNamer("mx1.example.com", pid=4242, clock=lambda: 1_767_225_600_042_137_999)
    match = NAME.match(namer.name(2048))
    assert match.groups() == ("1767225600", "042137", "4242", "1", "mx1.example.com", "2048")


def test_microseconds_are_always_six_digits():
    namer = MaildirNamer("h", pid=1, clock=lambda: 1_000_000_000_000_000_000 + 7_000)
    assert ".M000007P1Q1.h," in namer.name(1)


def test_hostname_is_sanitised_as_the_maildir_spec_says():
    assert sanitise_hostname("a/b:c") == "a\\057b\\072c"
    assert "/" not in MaildirNamer("x/y:z").name(1)[len("cur/"):]


def test_names_are_unique_across_threads_in_the_same_microsecond():
    namer = MaildirNamer("h", pid=7, clock=lambda: 1_700_000_000_000_000_000)
    names, lock = [], threading.Lock()

    def work():
        batch = [namer.name(10) for _ in range(500)]
        with lock:
            names.extend(batch)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(names) == len(set(names)) == 4000
