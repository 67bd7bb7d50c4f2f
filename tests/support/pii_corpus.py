"""A PII corpus, Korean and English: each text with the personal data it holds (entity type, the exact
substring), and near-misses that must stay (order numbers, dates, versions, phone-like product codes)."""

from __future__ import annotations

from collections.abc import Iterator

Labelled = tuple[str, tuple[tuple[str, str], ...]]

CORPUS: tuple[Labelled, ...] = (
    (
        "김민수 고객님의 주민등록번호는 900101-1234568 입니다.",
        (("PERSON", "김민수"), ("KR_RRN", "900101-1234568")),
    ),
    (
        "주민번호 021231-4123456 로 조회했습니다.",
        (("KR_RRN", "021231-4123456"),),
    ),  # since 2020: no check digit
    ("연락처: 010-1234-5678 로 문자 주세요.", (("PHONE_NUMBER", "010-1234-5678"),)),
    (
        "휴대폰 010 9876 5432, 사무실 02-345-6789",
        (("PHONE_NUMBER", "010 9876 5432"), ("PHONE_NUMBER", "02-345-6789")),
    ),
    ("해외에서는 +82 10-5555-1234 로 연락하세요.", (("PHONE_NUMBER", "+82 10-5555-1234"),)),
    ("부산 지점 051.123.4567 로 전화 주세요.", (("PHONE_NUMBER", "051.123.4567"),)),
    ("이메일은 kim.minsu@example.co.kr 입니다.", (("EMAIL_ADDRESS", "kim.minsu@example.co.kr"),)),
    ("국민은행 계좌 123456-01-234567 로 입금 바랍니다.", (("KR_BANK_ACCOUNT", "123456-01-234567"),)),
    ("환불 계좌번호는 신한 110-123-456789 입니다.", (("KR_BANK_ACCOUNT", "110-123-456789"),)),
    ("여권번호 M12345678 를 제출해주세요.", (("KR_PASSPORT", "M12345678"),)),
    ("외국인등록번호 850315-5123456 확인 부탁드립니다.", (("KR_FRN", "850315-5123456"),)),
    ("카드 번호 4111-1111-1111-1111 로 결제했어요.", (("CREDIT_CARD", "4111-1111-1111-1111"),)),
    ("접속 IP는 192.168.10.23 이었습니다.", (("IP_ADDRESS", "192.168.10.23"),)),
    ("담당자 이영희 씨에게 전달했습니다.", (("PERSON", "이영희"),)),
    ("성명: 박지훈, 생년월일 1990년 1월 1일", (("PERSON", "박지훈"),)),
    ("최수진 대표님과 회의가 있습니다.", (("PERSON", "최수진"),)),
    (
        "Please call John Smith at 010-2222-3333.",
        (("PERSON", "John Smith"), ("PHONE_NUMBER", "010-2222-3333")),
    ),
    ("Send the invoice to jane.doe@example.com today.", (("EMAIL_ADDRESS", "jane.doe@example.com"),)),
    ("My card is 5500 0000 0000 0004, expiring soon.", (("CREDIT_CARD", "5500 0000 0000 0004"),)),
    (
        "The request came from 10.0.0.5 and 2001:db8::1.",
        (("IP_ADDRESS", "10.0.0.5"), ("IP_ADDRESS", "2001:db8::1")),
    ),
    ("Maria Garcia signed the contract on Monday.", (("PERSON", "Maria Garcia"),)),
    ("Passport number M98765432 was scanned.", (("KR_PASSPORT", "M98765432"),)),
    ("Wire it to bank account 123-456-789012 please.", (("KR_BANK_ACCOUNT", "123-456-789012"),)),
    ("Resident registration number 800101-2345678 on file.", (("KR_RRN", "800101-2345678"),)),
    # Near-misses: nothing here is personal data.
    ("주문번호 2024-1234-5678 의 배송이 시작되었습니다.", ()),
    ("버전 1.2.3 으로 업데이트했습니다. 날짜는 2024-12-01 입니다.", ()),
    ("제품코드 MX-010-1234-5678 재고가 있습니다.", ()),
    ("서울 강남구 테헤란로 123, 10층에서 만나요.", ()),
    ("총 금액은 1,234,567원이며 수량은 12개입니다.", ()),
    ("Order 20241201-0001 shipped; release v10.2.3 is out.", ()),
    ("Build 2024.12.01 passed 1234 tests in 56.7 seconds.", ()),
    ("The model scored 0.987 on 10000 samples.", ()),
    ("Product SKU 010-12345-678 is back in stock.", ()),
    ("Meet at 3:30 pm on 2025-01-15 in room 1402.", ()),
)


def labelled_spans(text: str, labels: tuple[tuple[str, str], ...]) -> Iterator[tuple[str, int, int]]:
    cursor: dict[str, int] = {}
    for entity, substring in labels:
        start = text.index(substring, cursor.get(substring, 0))
        cursor[substring] = start + len(substring)
        yield entity, start, start + len(substring)
